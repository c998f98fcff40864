"""COCO detection data: ``<root>/annotations/instances_<split>.json`` and ``<root>/<split>/<file_name>``.

The same loader serves real COCO (``data.root``) and the built-in synthetic shapes in the COCO layout. Samples are
``(image, target)``: a uint8 CHW tensor and ``{"boxes": (N, 4) xyxy pixels, "labels": (N,) contiguous
1..K, "image_id", "orig_size": (height, width)}``, torchvision's detection contract.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from mnet_tasks.data.bad_files import BadFile
from mnet_tasks.data.datamodule import FileDataModule
from mnet_tasks.data.images import ImageReadError, read_rgb, upright_size
from mnet_tasks.tasks.detection.coco_eval import CategoryMap, load_coco
from mnet_tasks.tasks.detection.synthetic import COCO_SHAPES
from mnet_tasks.tasks.detection.transforms import check_crop, detection_transform

log = logging.getLogger(__name__)

EXPECTED_LAYOUT = "<root>/annotations/instances_<split>.json and <root>/<split>/<file_name>"
# What happens to each kind of annotation problem: crowd regions are COCO's "ignore" areas, not objects.
ANNOTATION_OUTCOMES = {
    "crowd": "crowd region, ignored in training (COCOeval ignores matches to it)",
    "clipped": "box partly outside the image, clipped to it",
    "zero_size": "box of zero or negative width or height, dropped",
    "outside_image": "box entirely outside the image, dropped",
    "malformed": "bbox that is not 4 finite numbers, dropped",
    "unknown_category": "category id not in the categories list, dropped",
    "image_without_boxes": "image with no usable box, kept (it teaches background)",
    "missing_image": "image listed but not on disk, dropped",
}


@dataclass(frozen=True)
class ImageRecord:
    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32 xyxy pixels, inside the image
    labels: np.ndarray  # (N,) int64 contiguous labels 1..K


def _usable_box(bbox: Sequence[float], width: int, height: int, counts: Counter) -> list[float] | None:
    """The box as clipped xyxy, or None (counted) when it cannot be used."""
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
        counts["malformed"] += 1
        return None
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        counts["zero_size"] += 1
        return None
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        counts["outside_image"] += 1
        return None
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        counts["clipped"] += 1
    return [x0, y0, x1, y1]


def _image_size(info: dict, path: Path, annotation_file: Path) -> tuple[int, int]:
    """``(width, height)`` from the json, else from the image file (labeling tools often omit them)."""
    if info.get("width") is not None and info.get("height") is not None:
        return int(info["width"]), int(info["height"])
    try:
        return upright_size(path)
    except ImageReadError as error:
        raise ValueError(
            f"{annotation_file}: image id {info['id']} has no width and height, and its file gives none either "
            f"({error})"
        ) from error


def parse_coco(
    coco: COCO, categories: CategoryMap, images_dir: Path, annotation_file: Path
) -> tuple[list[ImageRecord], Counter]:
    """Every image of ``coco`` (read from ``annotation_file``) with its usable boxes, and the count of each problem
    in ``ANNOTATION_OUTCOMES``."""
    counts: Counter = Counter()
    records = []
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        path = images_dir / info["file_name"]
        if not path.is_file():
            counts["missing_image"] += 1
            continue
        width, height = _image_size(info, path, annotation_file)
        boxes, labels = [], []
        for annotation in coco.imgToAnns.get(image_id, []):
            if annotation.get("iscrowd", 0):
                counts["crowd"] += 1
                continue
            if annotation.get("category_id") not in categories:
                counts["unknown_category"] += 1
                continue
            box = _usable_box(annotation.get("bbox", ()), width, height, counts)
            if box is not None:
                boxes.append(box)
                labels.append(categories.to_label(annotation["category_id"]))
        if not boxes:
            counts["image_without_boxes"] += 1
        records.append(
            ImageRecord(
                image_id,
                path,
                width,
                height,
                np.array(boxes, dtype=np.float32).reshape(-1, 4),
                np.array(labels, dtype=np.int64),
            )
        )
    return records, counts


def describe_counts(source: str, records: list[ImageRecord], counts: Counter) -> str:
    boxes = sum(len(r.labels) for r in records)
    lines = [f"{source}: {len(records)} images, {boxes} boxes"]
    lines += [f"  {counts[key]} x {outcome}" for key, outcome in ANNOTATION_OUTCOMES.items() if counts[key]]
    return "\n".join(lines)


class CocoDetectionDataset(Dataset):
    """One split of a COCO-format dataset; ``coco`` is its pycocotools index, the reference for COCOeval.

    An image that cannot be read, or whose size differs from its annotation's, is a
    :class:`~mnet_tasks.data.bad_files.BadFile`. ``problems`` counts the annotation problems by what happened
    (``ANNOTATION_OUTCOMES``); ``missing_files`` names the listed images not on disk.
    """

    def __init__(self, coco: COCO, annotation_file: Path, images_dir: Path, categories: CategoryMap, transform) -> None:
        self.annotation_file = Path(annotation_file)
        self.coco = coco
        self.records, self.counts = parse_coco(self.coco, categories, Path(images_dir), self.annotation_file)
        self.transform = transform
        self.problems = Counter({ANNOTATION_OUTCOMES[kind]: count for kind, count in self.counts.items()})
        kept = {record.image_id for record in self.records}
        self.missing_files = [  # parse_coco drops only the images that are not on disk
            BadFile(
                str(Path(images_dir) / coco.imgs[image_id]["file_name"]),
                f"missing file, listed in {self.annotation_file.name}",
            )
            for image_id in sorted(coco.imgs)
            if image_id not in kept
        ]
        log.info(describe_counts(str(self.annotation_file), self.records, self.counts))
        if not self.records:
            raise ValueError(f"{self.annotation_file} lists no image found under {images_dir}")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | BadFile:
        record = self.records[index]
        try:
            image = read_rgb(record.path)
        except ImageReadError as error:
            return BadFile.from_error(error)
        if image.shape[:2] != (record.height, record.width):
            return BadFile(
                str(record.path),
                f"{image.shape[1]}x{image.shape[0]} but {self.annotation_file.name} says "
                f"{record.width}x{record.height} (image id {record.image_id}): its boxes would be misplaced",
            )
        out = self.transform(image=image, bboxes=record.boxes, labels=record.labels)
        target = {
            "boxes": torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(out["labels"], dtype=np.int64)),
            "image_id": torch.tensor(record.image_id),
            "orig_size": torch.tensor([record.height, record.width]),
        }
        return out["image"], target


def collate_detection(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Images of different sizes stay a list: the detectors batch them themselves."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


class CocoDataModule(FileDataModule):
    """COCO-format detection data; ``root=None`` uses the synthetic shapes made with the ``synthetic`` parameters.

    ``square`` resizes every image to ``image_size`` square (SSD); otherwise images keep their size and the
    detector resizes them (Faster-RCNN). ``crop`` and ``color_jitter`` choose the training augmentation
    (:func:`~mnet_tasks.tasks.detection.transforms.detection_transform`).

    ``splits`` names the train and val folders (``instances_<folder>.json``). The label space is the train
    file's categories in id order; the val file must list the same ids.
    """

    synthetic_data = COCO_SHAPES
    expected_layout = EXPECTED_LAYOUT
    collate_fn = staticmethod(collate_detection)

    def __init__(
        self,
        *,
        image_size: int = 300,
        square: bool = True,
        crop: str = "none",
        color_jitter: bool = True,
        splits: dict[str, str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**{"batch_size": 32, **options})
        self.splits = dict(splits or {"train": "train2017", "val": "val2017"})
        self.image_size = image_size
        self.square = square
        self.crop, self.color_jitter = crop, color_jitter
        check_crop(crop)
        self._indexes: dict[str, COCO] = {}

    def annotation_file(self, split: str) -> Path:
        return self.data_dir / "annotations" / f"instances_{self.splits[split]}.json"

    def images_dir(self, split: str) -> Path:
        return self.data_dir / self.splits[split]

    def check_layout(self) -> None:
        for split in ("train", "val"):
            for path in (self.annotation_file(split), self.images_dir(split)):
                if not path.exists():
                    raise FileNotFoundError(
                        f"missing {path} (data.root={self.root}; expected layout {EXPECTED_LAYOUT}, "
                        f"split folders from data.splits={self.splits})"
                    )

    def index(self, split: str) -> COCO:
        """The pycocotools index of a split's annotation file, loaded once (COCO's train file takes seconds)."""
        if split not in self._indexes:
            self._indexes[split] = load_coco(self.annotation_file(split))
        return self._indexes[split]

    @property
    def categories(self) -> list[dict]:
        """The train file's categories sorted by id, checked against the val file's."""
        train, val = self.index("train"), self.index("val")
        if sorted(train.cats) != sorted(val.cats):
            raise ValueError(
                f"category ids differ between {self.annotation_file('train')} ({sorted(train.cats)}) and "
                f"{self.annotation_file('val')} ({sorted(val.cats)})"
            )
        return [train.cats[i] for i in sorted(train.cats)]

    def head_kwargs(self) -> dict:
        """The detectors' class count, and the ids and names that map labels back to the dataset."""
        return {
            "num_classes": len(self.categories),
            "category_ids": [c["id"] for c in self.categories],
            "category_names": [c["name"] for c in self.categories],
        }

    def _dataset(self, split: str, train: bool) -> CocoDetectionDataset:
        """A split's dataset; refused when it cannot do its job: training without a single box would learn only
        background, validation without annotations has nothing to score against."""
        if not train and not self.index(split).anns:
            raise ValueError(
                f"{self.annotation_file(split)} has no annotations to score against (its 'annotations' list is "
                "missing or empty): validation needs the ground-truth boxes of its images"
            )
        transform = detection_transform(
            self.image_size, train, square=self.square, crop=self.crop, color_jitter=self.color_jitter
        )
        if train:
            transform.set_random_seed(int(torch.randint(2**31, ())))  # reproducible under seed_everything
        categories = CategoryMap([c["id"] for c in self.categories])
        dataset = CocoDetectionDataset(
            self.index(split), self.annotation_file(split), self.images_dir(split), categories, transform
        )
        if train and not any(len(record.labels) for record in dataset.records):
            dropped = "".join(
                f"; {count} x {ANNOTATION_OUTCOMES[kind]}"
                for kind, count in dataset.counts.items()
                if kind != "image_without_boxes"
            )
            raise ValueError(
                f"{dataset.annotation_file}: no usable box to train on in its {len(dataset)} images "
                f"({len(dataset.coco.anns)} annotations{dropped})"
            )
        self.skipped_files.add(split, dataset.missing_files, loading=False)
        return dataset

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._dataset("train", train=True)
        if self.val_set is None:
            self.val_set = self._dataset("val", train=False)
