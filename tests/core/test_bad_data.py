"""Bad data under one policy: readable odd formats converted, unreadable files skipped, counted and reported."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CONVERTED, NOT_IMAGES, TINY, UNREADABLE, photo, write_bad_kinds
from PIL import ImageFile

from mnet_tasks.config import compose_config
from mnet_tasks.data.bad_files import (
    DATA_REPORT,
    SKIPPED_FILES,
    BadFile,
    DropBadFiles,
    SkippedFiles,
    SkippingDataLoader,
    TooManyBadFiles,
)
from mnet_tasks.run import run
from mnet_tasks.tasks.classification.data import ImageFolderDataModule

CLASSES = ("circle", "square")
GOOD_PER_CLASS = 6


@pytest.fixture
def imagefolder_root(tmp_path: Path) -> Path:
    """train/: 6 good images per class, plus every bad kind in the first class; val/: 3 good per class."""
    root = tmp_path / "imagenet"
    for split, count in (("train", GOOD_PER_CLASS), ("val", 3)):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                photo().save(folder / f"{name}_{i}.jpg")
    write_bad_kinds(root / "train" / CLASSES[0])
    return root


def read_skipped(run_dir: Path) -> dict[str, str]:
    with open(run_dir / SKIPPED_FILES, newline="") as f:
        return {Path(row["file"]).name: row["reason"] for row in csv.DictReader(f)}


def test_truncated_images_are_never_loaded_partially() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # after importing every dependency through mnet_tasks.run


def test_loader_drops_unreadable_files_and_trains_on_converted_ones(imagefolder_root: Path) -> None:
    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=1)
    data.prepare_data()
    data.setup("fit")
    seen = sum(len(labels) for _, labels in data.train_dataloader())  # a worker process reads, the loader records

    assert seen == 2 * GOOD_PER_CLASS + len(CONVERTED) + 1  # the tiny image too
    assert {Path(path).name for _, path in data.skipped_files.reasons} == set(UNREADABLE)
    assert {Path(path).name for _, path in data.skipped_files.notes} == {*NOT_IMAGES, TINY}
    assert data.skipped_files.since_report == {"train": len(UNREADABLE)}


def test_a_batch_of_only_bad_files_is_not_yielded() -> None:
    samples = [BadFile("a.jpg", "missing file"), (np.float32(1.0), 0), BadFile("b.jpg", "missing file")]
    skipped = SkippedFiles(limit=None)
    loader = SkippingDataLoader(samples, skipped=skipped, split="val", batch_size=2)

    batches = list(loader)

    assert len(batches) == 1 and batches[0][1].tolist() == [0]  # [bad, good] then [bad]: the empty one is dropped
    assert sorted(path for _, path in skipped.reasons) == ["a.jpg", "b.jpg"]
    assert DropBadFiles(lambda items: items)([BadFile("c.jpg", "x")]).batch is None


def test_training_run_completes_and_reports_each_skip(imagefolder_root: Path, quick: list[str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = compose_config(
        [
            *quick,
            "callbacks=none",
            f"data.root={imagefolder_root}",
            "data.batch_size=8",
            "trainer.max_epochs=2",
            f"paths.output_dir={run_dir}",
        ]
    )
    record = run(cfg)

    assert record["status"] == "completed" and record["epochs"] == 2
    skipped = read_skipped(run_dir)
    assert skipped.keys() == {*UNREADABLE, *NOT_IMAGES, TINY}  # every file in the data folder is used or listed
    for name, reason in UNREADABLE.items():
        assert reason in skipped[name]
    assert all(skipped[name].startswith("extension not supported (the reader takes .bmp") for name in NOT_IMAGES)
    assert skipped[TINY] == "tiny image (1x1 px), upscaled to the input size, used"
    # data_report.json agrees with skipped_files.csv: the unreadable files are not counted as samples
    report = json.loads((run_dir / DATA_REPORT).read_text())
    not_images = next(key for key in report["train"] if key.startswith("extension not supported"))
    assert report["train"] == {
        "samples": 2 * GOOD_PER_CLASS + len(CONVERTED) + 1,
        not_images: len(NOT_IMAGES),
        "unreadable, skipped": len(UNREADABLE),
    }
    assert report["val"] == {"samples": 6}


def test_run_stops_over_the_limit_naming_the_key(imagefolder_root: Path, quick: list[str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = compose_config(
        [
            *quick,
            "callbacks=none",
            f"data.root={imagefolder_root}",
            "data.max_skipped_files=2",
            f"paths.output_dir={run_dir}",
        ]
    )
    with pytest.raises(TooManyBadFiles, match=r"3 files could not be read, more than data.max_skipped_files=2"):
        run(cfg)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"
    assert {*UNREADABLE, *NOT_IMAGES} <= read_skipped(run_dir).keys()  # written on the way out


def test_limit_must_be_a_count() -> None:
    with pytest.raises(ValueError, match=r"data.max_skipped_files must be an integer >= 0 or null"):
        ImageFolderDataModule(root="anywhere", image_size=32, max_skipped_files=-1)
