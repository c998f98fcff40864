import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Each of pytest-xdist's workers (pyproject.toml: -n 2) runs one thread, as do the processes its tests start, so
    # that two workers share two cores without oversubscribing them. An OMP_NUM_THREADS set by the caller wins.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# A small but real configuration: the built-in synthetic data, shrunk, and a thin network.
QUICK = [
    "backbone.alpha=0.25",
    "backbone.resolution=64",
    "data.synthetic.num_classes=4",
    "data.synthetic.train_per_class=8",
    "data.synthetic.val_per_class=4",
    "data.synthetic.image_size=48",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
    "task.error_analysis=false",  # the tests of the analysis switch it on
    "report=false",  # report.html costs about 0.3 s a run; tests/core/test_report.py switches it on
]


# Each task's built-in data, tiny, as the tests share it (the session's data_dir then holds one generated set per
# task): the task's data overrides, to follow "task=<task>" (classification is the default task).
TINY_DATA = {
    "classification": [
        "data.synthetic.num_classes=4",
        "data.synthetic.train_per_class=8",
        "data.synthetic.val_per_class=4",
        "data.synthetic.image_size=48",
        "data.batch_size=16",
    ],
    "detection": [
        "backbone.resolution=96",
        "data.synthetic.train_images=8",
        "data.synthetic.val_images=4",
        "data.synthetic.image_size=96",
        "data.batch_size=4",
    ],
    "attributes": [
        "data.synthetic.train_images=32",
        "data.synthetic.unlabeled_images=0",
        "data.synthetic.val_images=16",
        "data.synthetic.test_images=4",
        "data.synthetic.image_width=48",
        "data.batch_size=16",
    ],
    "geolocalization": [
        "data.synthetic.train_size=240",
        "data.synthetic.test_size=24",
        "data.synthetic.image_size=64",
        "data.partitions=[{name:coarse,min_per_cell:20,max_per_cell:120},{name:fine,min_per_cell:5,max_per_cell:40}]",
        "data.batch_size=32",
    ],
    "face_embedding": [
        "data.synthetic.train_identities=12",
        "data.synthetic.photos_per_identity=4",
        "data.synthetic.unlabeled_images=8",
        "data.synthetic.eval_identities=20",
        "data.synthetic.eval_photos_per_identity=3",
        "data.synthetic.pairs_per_fold=2",
        "data.synthetic.large_mismatched=1000",
        "data.synthetic.image_size=64",
        "data.batch_size=16",
    ],
}


def tiny_data(task: str) -> list[str]:
    """``task=<task>`` and its tiny data (:data:`TINY_DATA`)."""
    return [f"task={task}", *TINY_DATA[task]]


# One epoch on tiny data, the checkpoints the export and predict tests start from; a task adds its data overrides.
TINY_RUN = [
    "backbone.alpha=0.25",
    "backbone.resolution=64",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "task.error_analysis=false",
    "report=false",
]


def train_tiny(task_overrides: list[str], run_dir: Path, data_dir: Path) -> tuple[Path, list[str], dict]:
    """A checkpoint of one epoch on tiny synthetic data; returns it, the data overrides and the run's record."""
    from mnet_tasks.config import compose_config
    from mnet_tasks.run import run

    data = [*task_overrides, f"paths.data_dir={data_dir}"]
    record = run(compose_config([*TINY_RUN, *data, f"paths.output_dir={run_dir}"]))
    return run_dir / "checkpoints" / "last.ckpt", data, record


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The overrides of every job that ``python -m mnet_tasks -m OVERRIDES`` launches: the grid of the composed
    ``hydra.sweeper.params`` (a plain multirun's comma lists are left to the caller)."""
    import itertools

    from hydra import compose, initialize_config_dir

    from mnet_tasks.config import config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        sweep = compose("config", overrides, return_hydra_config=True).hydra.sweeper.params
    grid = [[f"{key}={value}" for value in str(values).split(",")] for key, values in sweep.items()]
    return [[*overrides, *job] for job in itertools.product(*grid)]


def export_config(checkpoint: Path, *overrides: str):
    from mnet_tasks.trained import compose_for_checkpoint

    return compose_for_checkpoint("export", [f"ckpt_path={checkpoint}", *overrides], "ckpt_path")


def reference_outputs(checkpoint: Path, images):
    """The checkpoint's own forward (BatchNorm unfolded) on ``images``: what an export must reproduce."""
    import torch

    from mnet_tasks.trained import load_trained

    with torch.inference_mode():
        return load_trained(checkpoint, crop_pct=1.0).reference()(images)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One cache of generated synthetic data for the whole session."""
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture
def quick(data_dir) -> list[str]:
    return [*QUICK, f"paths.data_dir={data_dir}"]


def run_cli(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m mnet_tasks ARGS`` in a fresh process started in ``cwd`` (not the repo)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "mnet_tasks", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        output = f"STDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-3000:]}"
        raise AssertionError(f"exit {result.returncode}\n{output}")
    return result


# --- learning tests: a metric reached after training, held against a bar ---------------------------------------------
# tests/spread.py reruns them over seeds and CPU kernel paths; these two variables are how it talks to them.
LEARNING_SEED = int(os.environ.get("MNET_LEARNING_SEED", "42"))  # 42: the config's own seed
LEARNING_LOG = os.environ.get("MNET_LEARNING_LOG")  # a JSON-lines file that collects every measurement


class LearningBars:
    """Every metric a learning test measures, with its bar: all are recorded (printed, and appended to
    ``$MNET_LEARNING_LOG``) before any is asserted, so one run of the spread script sees each of them."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.rows: list[dict] = []

    def measure(self, metric: str, value: float, *, at_least: float | None = None, at_most: float | None = None):
        if (at_least is None) == (at_most is None):
            raise ValueError(f"{metric}: give exactly one of at_least and at_most")
        self.rows.append({"metric": metric, "value": float(value), "at_least": at_least, "at_most": at_most})

    def check(self) -> None:
        failed = []
        for row in self.rows:
            bar = f">= {row['at_least']:g}" if row["at_least"] is not None else f"<= {row['at_most']:g}"
            passed = row["value"] >= row["at_least"] if row["at_least"] is not None else row["value"] <= row["at_most"]
            print(f"{row['metric']}: {row['value']:.4f} (bar {bar}){'' if passed else '  FAILED'}")
            if not passed:
                failed.append(f"{row['metric']} = {row['value']:.4f}, bar {bar}")
        if LEARNING_LOG:
            with open(LEARNING_LOG, "a") as log:
                for row in self.rows:
                    log.write(json.dumps({"test": self.test, "seed": LEARNING_SEED, **row}) + "\n")
        assert not failed, f"seed {LEARNING_SEED}: " + "; ".join(failed)


@pytest.fixture(scope="session")
def learning_seed() -> int:
    """The training seed of a learning test (``seed=`` in its config)."""
    return LEARNING_SEED


@pytest.fixture(scope="session")
def shapes_run(tmp_path_factory, data_dir: Path, learning_seed: int) -> tuple[dict, Path]:
    """The classification learning run, trained once a session: 0.25 MobileNet-64, 8 epochs on the built-in shapes.
    Its ``metrics.json`` record, and its last checkpoint, which the transfer test fine-tunes from."""
    from mnet_tasks.config import compose_config
    from mnet_tasks.run import run

    output_dir = tmp_path_factory.mktemp("shapes_run")
    cfg = compose_config(
        [
            "backbone.alpha=0.25",
            "backbone.resolution=64",
            "data.batch_size=32",
            "data.num_workers=2",
            "trainer.max_epochs=8",
            "trainer.enable_progress_bar=false",
            "callbacks.lr_monitor=null",
            "logger=none",
            "task.error_analysis=false",
            "report=false",
            f"seed={learning_seed}",
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={output_dir}",
        ]
    )
    return run(cfg), output_dir / "checkpoints" / "last.ckpt"


@pytest.fixture
def bars(request) -> LearningBars:
    return LearningBars(request.node.name)


# --- files of every bad kind, shared by the bad-data tests of the core and of each task's format ---------------
RNG = np.random.default_rng(0)
# Readable odd formats: converted to 8-bit RGB and trained on.
CONVERTED = ("grayscale.png", "rgba.png", "sixteen_bit.png", "palette.png", "exif_rotated.jpg")
# Unreadable files and the reason each is reported with.
UNREADABLE = {
    "truncated.jpg": "truncated file",
    "zero_bytes.jpg": "empty file (0 bytes)",
    "garbage.jpg": "not an image format PIL can identify",
}
# Used, and named in the report: an image too small to hold anything once resized to the input.
TINY = "one_pixel.png"
# Files of other types among the images: listed with the reason, never trained on, not held against the limit.
NOT_IMAGES = ("animated.gif", "notes.txt")


def photo(size: tuple[int, int] = (40, 40)) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))


def write_bad_kinds(folder: Path) -> None:
    """One file of every kind the issue lists (but the missing one, which needs a list naming it)."""
    Image.new("L", (40, 40), 100).save(folder / "grayscale.png")
    Image.new("RGBA", (40, 40), (10, 20, 30, 128)).save(folder / "rgba.png")
    Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)).save(folder / "sixteen_bit.png")
    photo().convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    photo((48, 32)).save(folder / "exif_rotated.jpg", exif=exif)
    photo().save(folder / "whole.jpg", quality=90)
    (folder / "truncated.jpg").write_bytes((folder / "whole.jpg").read_bytes()[:600])
    (folder / "whole.jpg").unlink()
    (folder / "zero_bytes.jpg").write_bytes(b"")
    (folder / "garbage.jpg").write_bytes(RNG.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    photo().save(folder / "animated.gif", save_all=True, append_images=[photo(), photo()], duration=100, loop=0)
    (folder / "notes.txt").write_text("labelled by hand\n")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / TINY)
