"""COCO data with bad files: missing, unreadable and wrongly sized images skipped with their reason."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from mnet_tasks.tasks.detection.data import CocoDataModule
from mnet_tasks.tasks.detection.synthetic import COCO_SHAPES


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
