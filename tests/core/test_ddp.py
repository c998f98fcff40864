"""Two-process DDP on CPU (gloo) through the real CLI, for every task: one run folder for the job, files written by
rank 0 only, and validation metrics counting each image once although the distributed sampler pads with repeats."""

import json

import pytest
from conftest import QUICK, run_cli

# Each task's tiny data (the same as its own tests'), an odd number of validation images so that the two ranks'
# shares need padding, and two training steps.
TASKS = {
    "classification": (QUICK, None),
    "finegrained": (
        [
            *QUICK[:2],
            "task=finegrained",
            "data.synthetic.num_classes=6",
            "data.synthetic.train_per_class=5",
            "data.synthetic.test_per_class=3",
            "data.synthetic.image_size=64",
        ],
        None,
    ),
    "attributes": (
        [
            "task=attributes",
            "backbone.resolution=64",
            "data.synthetic.train_images=16",
            "data.synthetic.unlabeled_images=0",
            "data.synthetic.val_images=7",
            "data.synthetic.test_images=0",
            "data.synthetic.image_width=64",
        ],
        None,
    ),
    "detection": (
        [
            "task=detection",
            "backbone.resolution=96",
            "data.synthetic.train_images=8",
            "data.synthetic.val_images=5",
            "data.synthetic.image_size=96",
        ],
        5,
    ),
    "detection_frcnn": (
        [
            "task=detection_frcnn",
            "backbone.resolution=96",
            "data.synthetic.train_images=8",
            "data.synthetic.val_images=5",
            "data.synthetic.image_size=96",
        ],
        5,
    ),
    "geolocalization": (
        [
            "task=geolocalization",
            "backbone.resolution=64",
            "data.synthetic.train_size=60",
            "data.synthetic.test_size=41",
            "data.synthetic.image_size=64",
            "data.partitions=[{name:cells,min_per_cell:5,max_per_cell:40}]",
        ],
        41,
    ),
}
COMMON = [
    "backbone.alpha=0.25",
    "trainer=ddp",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "data.batch_size=4",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
]


def run_ddp(task: str, tmp_path, data_dir) -> dict:
    overrides, _ = TASKS[task]
    run_cli([*overrides, *COMMON, f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path / 'outputs'}"], cwd=tmp_path)
    runs = list((tmp_path / "outputs").glob("*/runs/*"))
    assert len(runs) == 1, runs  # one folder for the job, shared by both processes
    run_dir = runs[0]
    assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran, in this folder
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    record = json.loads((run_dir / "metrics.json").read_text())  # written once, by rank 0
    assert record["status"] == "completed" and record["epochs"] == 1, record
    return record


@pytest.mark.parametrize(
    "task", [pytest.param(task, marks=() if task == "classification" else pytest.mark.slow) for task in TASKS]
)
def test_two_process_ddp(task, tmp_path, data_dir):
    record = run_ddp(task, tmp_path, data_dir)
    final = record["metrics"]["final"]
    assert final, record
    if (images := TASKS[task][1]) is not None:
        assert final["val/images"] == images  # each validation image counted once, over both processes
