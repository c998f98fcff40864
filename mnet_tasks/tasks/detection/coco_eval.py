"""COCO evaluation with pycocotools: label mapping, results in COCO's format, and COCOeval's 12 numbers."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# COCOeval.stats, in order; pycocotools reports -1 where a range has no ground truth (e.g. no small objects).
STAT_NAMES = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


def load_coco(annotation_file: str | Path) -> COCO:
    """A pycocotools index of an ``instances_*.json``, without its prints; errors name the file."""
    path = Path(annotation_file)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {path} does not exist")
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return COCO(str(path))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a COCO instances file: {err}") from err


class CategoryMap:
    """COCO category ids (sparse: 1..90 with gaps) <-> contiguous labels 1..K; 0 is the detectors' background."""

    def __init__(self, category_ids: Sequence[int]):
        self.category_ids = [int(c) for c in category_ids]
        if len(set(self.category_ids)) != len(self.category_ids):
            raise ValueError(f"duplicate category ids in {self.category_ids}")
        self._labels = {cat: label for label, cat in enumerate(self.category_ids, start=1)}

    def __len__(self) -> int:
        return len(self.category_ids)

    def __contains__(self, category_id: int) -> bool:
        return category_id in self._labels

    def to_label(self, category_id: int) -> int:
        return self._labels[category_id]

    def to_category_id(self, label: int) -> int:
        if not 1 <= label <= len(self.category_ids):
            raise ValueError(f"label {label} is outside 1..{len(self.category_ids)}")
        return self.category_ids[label - 1]


def to_coco_results(
    detections: dict[str, torch.Tensor], image_id: int, categories: CategoryMap, scale: tuple[float, float]
) -> list[dict]:
    """One image's detections (xyxy boxes in model-input pixels) as COCO results in the original image's pixels.

    ``scale`` is (original width / input width, original height / input height).
    """
    boxes = detections["boxes"].detach().cpu().double().numpy() * np.array([*scale, *scale])
    scores = detections["scores"].detach().cpu().tolist()
    labels = detections["labels"].detach().cpu().tolist()
    return [
        {
            "image_id": int(image_id),
            "category_id": categories.to_category_id(int(label)),
            "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
            "score": round(float(score), 5),
        }
        for (x0, y0, x1, y1), score, label in zip(boxes, scores, labels, strict=True)
    ]


def coco_evaluate(ground_truth: COCO, results: list[dict], image_ids: Iterable[int]) -> dict[str, float]:
    """COCOeval (bbox) over ``image_ids``: AP@[.5:.95], AP50, AP75, AP by size and the recalls, by name."""
    image_ids = sorted({int(i) for i in image_ids})
    if not image_ids:
        raise ValueError("no images to evaluate")
    if not results:  # loadRes rejects an empty list; no detection means zero precision and recall
        return {name: 0.0 for name in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        # loadRes adds fields to the dicts it is given: hand it copies, so ``results`` stays in results format.
        evaluator = COCOeval(ground_truth, ground_truth.loadRes([dict(r) for r in results]), "bbox")
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats, strict=True)}
