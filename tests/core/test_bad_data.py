"""Bad data under one policy: readable odd formats converted, unreadable files skipped, counted and reported."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

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
from mnet_tasks.tasks.attributes.data import CelebADataModule
from mnet_tasks.tasks.classification.data import ImageFolderDataModule
from mnet_tasks.tasks.detection.data import CocoDataModule
from mnet_tasks.tasks.detection.synthetic import COCO_SHAPES

RNG = np.random.default_rng(0)
CLASSES = ("circle", "square")
GOOD_PER_CLASS = 6
# Readable odd formats: converted to 8-bit RGB and trained on.
CONVERTED = ("grayscale.png", "rgba.png", "sixteen_bit.png", "palette.png", "exif_rotated.jpg")
# Unreadable files and the reason each is reported with.
UNREADABLE = {
    "truncated.jpg": "truncated file",
    "zero_bytes.jpg": "empty file (0 bytes)",
    "garbage.jpg": "not an image format PIL can identify",
}
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

    assert seen == 2 * GOOD_PER_CLASS + len(CONVERTED)
    assert {Path(path).name for _, path in data.skipped_files.reasons} == set(UNREADABLE)
    assert {Path(path).name for _, path in data.skipped_files.not_images} == set(NOT_IMAGES)
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
    assert skipped.keys() == {*UNREADABLE, *NOT_IMAGES}  # every file in the data folder is used or listed
    for name, reason in UNREADABLE.items():
        assert reason in skipped[name]
    assert all(skipped[name].startswith("extension not supported (the reader takes .bmp") for name in NOT_IMAGES)
    # data_report.json agrees with skipped_files.csv: the unreadable files are not counted as samples
    report = json.loads((run_dir / DATA_REPORT).read_text())
    not_images = next(key for key in report["train"] if key.startswith("extension not supported"))
    assert report["train"] == {
        "samples": 2 * GOOD_PER_CLASS + len(CONVERTED),
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
    assert read_skipped(run_dir).keys() == {*UNREADABLE, *NOT_IMAGES}  # written on the way out


def test_limit_must_be_a_count() -> None:
    with pytest.raises(ValueError, match=r"data.max_skipped_files must be an integer >= 0 or null"):
        ImageFolderDataModule(root="anywhere", image_size=32, max_skipped_files=-1)


def write_celeba_with_bad_files(root: Path) -> None:
    """CelebA lists: 8 train images (the bad kinds among them) and 2 val; one listed train image is not on disk."""
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    for i in range(4):
        photo().save(images / f"good_{i}.jpg")
    write_bad_kinds(images)
    names = [*sorted(p.name for p in images.iterdir() if p.name not in NOT_IMAGES), "listed_but_missing.jpg"]
    val = ["good_0.jpg", "good_1.jpg"]
    lines = [f"{name} {'1' if i % 2 else '-1'} -1" for i, name in enumerate(names)]
    (root / "list_attr_celeba.txt").write_text(f"{len(names)}\nSmiling Young\n" + "\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {1 if n in val else 0}\n" for n in names))


def test_celeba_skips_missing_and_unreadable_files(tmp_path: Path) -> None:
    root = tmp_path / "celeba"
    write_celeba_with_bad_files(root)
    data = CelebADataModule(root=str(root), image_size=32, batch_size=4, num_workers=0)
    data.prepare_data()
    data.setup("fit")
    seen = sum(len(batch["index"]) for batch in data.train_dataloader())

    trainable = 2 + len(CONVERTED)  # good_2, good_3 and the converted ones
    assert seen == trainable
    skipped = {Path(path).name: reason for (_, path), reason in data.skipped_files.reasons.items()}
    assert skipped == {
        "listed_but_missing.jpg": "missing file, listed in list_eval_partition.txt",
        **{name: skipped[name] for name in UNREADABLE},
    }
    assert data.data_report()["train"] == {
        "samples": trainable + len(UNREADABLE),
        "image listed in list_eval_partition.txt but missing, dropped": 1,
    }


def test_coco_skips_missing_unreadable_and_missized_images(tmp_path: Path) -> None:
    params = {"num_classes": 2, "train_images": 10, "val_images": 4, "image_size": 64, "max_objects": 2}
    root = COCO_SHAPES.generate(tmp_path / "coco", **params)
    train = sorted((root / "train2017").iterdir())
    train[0].write_bytes(train[0].read_bytes()[:300])
    train[1].write_bytes(b"")
    train[2].unlink()
    Image.open(train[3]).convert("L").save(train[3], format="JPEG")  # readable: converted
    Image.new("RGB", (20, 20)).save(train[4], format="JPEG")  # not the size its annotation gives
    data = CocoDataModule(root=str(root), image_size=64, batch_size=4, num_workers=0)
    data.prepare_data()
    data.setup("fit")
    seen = sum(len(images) for images, _ in data.train_dataloader())

    assert seen == 10 - 4
    reasons = {Path(path).name: reason for (_, path), reason in data.skipped_files.reasons.items()}
    assert reasons.keys() == {train[i].name for i in (0, 1, 2, 4)}
    assert reasons[train[0].name].startswith("truncated file")
    assert reasons[train[1].name] == "empty file (0 bytes)"
    assert reasons[train[2].name] == "missing file, listed in instances_train2017.json"
    assert "20x20 but instances_train2017.json says" in reasons[train[4].name]
    assert data.data_report()["train"]["image listed but not on disk, dropped"] == 1
