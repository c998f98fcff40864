"""The README's command for each paper table, run as written for one training step per job, with ``data.root``
pointing at the task's synthetic set (written in the real dataset's layout) instead of the real data."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import timm
import torch
from conftest import sweep_jobs
from hydra.utils import instantiate

import mnet_tasks.tasks
from mnet_tasks.backbone import MobileNetV1
from mnet_tasks.config import compose_config
from mnet_tasks.run import run

README = Path(__file__).resolve().parents[2] / "README.md"
TASK_PACKAGES = Path(mnet_tasks.tasks.__file__).parent
# One training and one validation batch of two images, on the CPU: enough to run every part of a job once.
ONE_STEP = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "data.batch_size=2",
    "data.num_workers=0",
]
# The real data each command names -> the task whose synthetic set stands in for it, shrunk.
STAND_INS = {
    "/data/imagenet": (
        "classification",
        ["num_classes=3", "train_per_class=2", "val_per_class=2", "image_size=48"],
    ),
    "/data/stanford_dogs": ("finegrained", ["num_classes=3", "train_per_class=2", "test_per_class=2", "image_size=64"]),
    "/data/geo": ("geolocalization", ["train_size=600", "test_size=8", "image_size=48"]),
    "/data/celeba": (
        "attributes",
        ["train_images=8", "unlabeled_images=4", "val_images=4", "test_images=0", "image_width=48"],
    ),
    "/data/coco": ("detection", ["train_images=4", "val_images=4", "image_size=96"]),
    "/data/faces": (
        "face_embedding",
        [
            "train_identities=3",
            "photos_per_identity=2",
            "unlabeled_images=2",
            "eval_identities=40",
            "eval_photos_per_identity=4",
            "pairs_per_fold=1",
            "large_mismatched=10000",  # TAR at FAR 1e-4, the monitor, must be measurable
            "image_size=48",
        ],
    ),
}


def readme_commands() -> list[str]:
    """The commands of the README's "The commands, table by table" block, in order."""
    text = README.read_text()
    block = text[text.index("The commands, table by table") :].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("python -m mnet_tasks")]


def test_the_readme_gives_a_command_for_every_paper_table_experiment():
    experiments = {re.search(r"experiment=(\w+)", command)[1] for command in readme_commands()}
    tables = {path.stem for path in TASK_PACKAGES.glob("*/conf/experiment/paper_table*.yaml")}
    assert len(tables) == 8 and tables <= experiments
    assert {re.search(r"data\.root=(\S+)", command)[1] for command in readme_commands()} == set(STAND_INS)


def synthetic_root(root: str, data_dir: Path) -> Path:
    """The stand-in for the real dataset at ``root``: its task's synthetic set, in that dataset's layout."""
    task, sizes = STAND_INS[root]
    folders = [f"paths.data_dir={data_dir}", f"paths.output_dir={data_dir / task}"]
    cfg = compose_config([f"task={task}", *folders, *(f"data.synthetic.{s}" for s in sizes)])
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    if task != "geolocalization":
        return datamodule.data_dir
    # MP-16 and Im2GPS: list files with those names, image paths relative to their own folders.
    layout = data_dir / "mp16_layout"
    if not layout.exists():
        layout.mkdir()
        lists = (("mp16", "mp16_places365.csv", "train.csv"), ("im2gps", "im2gps_places365.csv", "test.csv"))
        for folder, listing, source in lists:
            (layout / folder).symlink_to(datamodule.data_dir, target_is_directory=True)
            shutil.copy(datamodule.data_dir / source, layout / listing)
    return layout


def local_weights(source: str, alpha: float, folder: Path) -> str:
    """A local file in place of ``backbone.pretrained``: random weights in timm's own layout for a ``timm:`` name
    (nothing is downloaded), or a MobileNetV1 of width ``alpha`` at the path of a checkpoint the command expects
    an earlier run to have written."""
    name = source.removeprefix("timm:")
    path = folder / f"{name}.pth" if source.startswith("timm:") else Path(source)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        network = timm.create_model(name.split(".")[0]) if source.startswith("timm:") else MobileNetV1(alpha=alpha)
        torch.save(network.state_dict(), path)
    return str(path)


def job_overrides(command: str, data_dir: Path) -> list[list[str]]:
    """The overrides of every job ``command`` launches, its data and weights swapped for local stand-ins."""
    words = shlex.split(command)[3:]
    multirun = "-m" in words
    overrides = []
    for word in (w for w in words if w != "-m"):
        key, value = word.split("=", 1)
        if key == "data.root":
            value = str(synthetic_root(value, data_dir))
        elif key == "hydra.run.dir":
            key = "paths.output_dir"
        overrides.append(f"{key}={value}")
    backbone = compose_config(overrides).backbone
    if backbone.pretrained:
        overrides.append(f"backbone.pretrained={local_weights(backbone.pretrained, backbone.alpha, data_dir)}")
    return sweep_jobs(overrides) if multirun else [overrides]


@pytest.mark.slow
@pytest.mark.parametrize("root", sorted(STAND_INS))
def test_each_paper_table_command_runs_a_step_of_every_job_on_the_synthetic_stand_in(
    root, tmp_path, data_dir, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the commands' relative paths (outputs/...) land here
    commands = [command for command in readme_commands() if f"data.root={root}" in command]
    jobs = 0
    for number, command in enumerate(commands):
        for index, overrides in enumerate(job_overrides(command, data_dir)):
            own_folder = any(o.startswith("paths.output_dir=") for o in overrides)
            output = [] if own_folder else [f"paths.output_dir=job{number}_{index}"]
            record = run(compose_config([*overrides, *ONE_STEP, *output, f"paths.data_dir={data_dir}"]))
            assert record["status"] == "completed" and record["epochs"] == 1, (command, overrides)
            jobs += 1
    assert jobs >= len(commands)
