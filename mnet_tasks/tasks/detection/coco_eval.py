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


def to_input_box(bbox: Sequence[float], scale: tuple[float, float]) -> list[float]:
    """A COCO ``[x, y, width, height]`` box in the original image's pixels as xyxy in the model input's, the
    inverse of :func:`to_coco_results`; ``scale`` is (input width / original width, input height / original
    height)."""
    x, y, width, height = bbox
    return [x * scale[0], y * scale[1], (x + width) * scale[0], (y + height) * scale[1]]


def evaluate_boxes(ground_truth: COCO, results: list[dict], image_ids: Iterable[int]) -> COCOeval:
    """COCOeval (bbox) over ``image_ids``, evaluated, accumulated and summarized: its ``stats`` and its own arrays
    (``eval["precision"]``, ``evalImgs``), which the error analysis reads. No result at all is scored against an
    empty set of detections (pycocotools' ``loadRes`` rejects an empty list)."""
    image_ids = sorted({int(i) for i in image_ids})
    if not image_ids:
        raise ValueError("no images to evaluate")
    with contextlib.redirect_stdout(io.StringIO()):
        # loadRes adds fields to the dicts it is given: hand it copies, so ``results`` stays in results format.
        detections = ground_truth.loadRes([dict(r) for r in results]) if results else _no_detections(ground_truth)
        evaluator = COCOeval(ground_truth, detections, "bbox")
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _no_detections(ground_truth: COCO) -> COCO:
    """A results index of the ground truth's images and categories without a single annotation."""
    empty = COCO()
    empty.dataset = {
        "images": ground_truth.dataset["images"],
        "categories": ground_truth.dataset["categories"],
        "annotations": [],
    }
    empty.createIndex()
    return empty


def coco_stats(evaluator: COCOeval) -> dict[str, float]:
    """COCOeval's 12 numbers by name; all 0 when there was no detection at all (rather than pycocotools' -1 for
    a size range without ground truth: nothing was found)."""
    if not evaluator.cocoDt.anns:
        return {name: 0.0 for name in STAT_NAMES}
    return {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats, strict=True)}


def coco_evaluate(ground_truth: COCO, results: list[dict], image_ids: Iterable[int]) -> dict[str, float]:
    """COCOeval (bbox) over ``image_ids``: AP@[.5:.95], AP50, AP75, AP by size and the recalls, by name."""
    return coco_stats(evaluate_boxes(ground_truth, results, image_ids))


# --- per category, from COCOeval's own arrays: area "all" and 100 detections per image, as its stats[0] ---


def _area_and_max_dets(evaluator: COCOeval) -> tuple[int, int]:
    params = evaluator.params
    return params.areaRngLbl.index("all"), params.maxDets.index(100)


def _iou_index(evaluator: COCOeval, iou: float) -> int:
    found = np.flatnonzero(np.isclose(evaluator.params.iouThrs, iou))
    if not len(found):
        raise ValueError(f"COCOeval was not run at IoU {iou} (its thresholds: {list(evaluator.params.iouThrs)})")
    return int(found[0])


def _image_evaluations(evaluator: COCOeval, category_index: int) -> list[dict]:
    """``evalImgs`` of one category at area "all" (for 100 detections per image): one per image that has ground
    truth or detections of it. ``evalImgs`` is ordered by category, then area range, then image."""
    params = evaluator.params
    images, area = len(params.imgIds), _area_and_max_dets(evaluator)[0]
    start = (category_index * len(params.areaRng) + area) * images
    return [e for e in evaluator.evalImgs[start : start + images] if e is not None]


def _mean_precision(values: np.ndarray) -> float:
    defined = values[values > -1]  # -1: no ground truth of the category
    return float(defined.mean()) if defined.size else float("nan")


def per_category_ap(evaluator: COCOeval) -> list[dict]:
    """One row per category: ``category`` (its name), ``category_id``, ``ap`` (AP@[.5:.95]), ``ap50`` and
    ``gt_boxes`` (the ground-truth boxes scored, crowd regions excluded), from ``eval["precision"]``; a category
    without ground truth among the images has NaN APs, and the mean over the others is ``stats[0]`` (``stats[1]``
    for AP50)."""
    precision = evaluator.eval["precision"]  # (IoU, recall, category, area, max detections)
    area, max_dets = _area_and_max_dets(evaluator)
    at_50 = _iou_index(evaluator, 0.5)
    rows = []
    for k, category_id in enumerate(evaluator.params.catIds):
        scored = sum(
            int(np.count_nonzero(~np.asarray(e["gtIgnore"], dtype=bool))) for e in _image_evaluations(evaluator, k)
        )
        rows.append(
            {
                "category": evaluator.cocoGt.cats[category_id]["name"],
                "category_id": int(category_id),
                "ap": _mean_precision(precision[:, :, k, area, max_dets]),
                "ap50": _mean_precision(precision[at_50, :, k, area, max_dets]),
                "gt_boxes": scored,
            }
        )
    return rows


def precision_recall(evaluator: COCOeval, iou: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """COCOeval's interpolated precision at its 101 recall thresholds (``params.recThrs``) at one IoU threshold,
    per category name, for the categories with ground truth."""
    precision = evaluator.eval["precision"]
    area, max_dets = _area_and_max_dets(evaluator)
    t = _iou_index(evaluator, iou)
    curves = {}
    for k, category_id in enumerate(evaluator.params.catIds):
        values = precision[t, :, k, area, max_dets]
        if (values > -1).any():
            curves[evaluator.cocoGt.cats[category_id]["name"]] = values
    return np.asarray(evaluator.params.recThrs), curves


def missed_ground_truth(evaluator: COCOeval, iou: float = 0.5) -> list[dict]:
    """The ground-truth annotations no detection matched at ``iou`` (COCOeval's ``gtMatches``; crowd regions,
    which COCOeval ignores, left out), the largest box first."""
    t = _iou_index(evaluator, iou)
    missed = []
    for k in range(len(evaluator.params.catIds)):
        for evaluation in _image_evaluations(evaluator, k):
            matches = np.asarray(evaluation["gtMatches"])[t]
            ignored = np.asarray(evaluation["gtIgnore"], dtype=bool)
            missed += [
                gt_id
                for gt_id, match, ignore in zip(evaluation["gtIds"], matches, ignored, strict=True)
                if match == 0 and not ignore
            ]
    annotations = [evaluator.cocoGt.anns[gt_id] for gt_id in missed]
    return sorted(annotations, key=lambda a: (-a["bbox"][2] * a["bbox"][3], a["id"]))
