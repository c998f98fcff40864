"""Detection's error analysis from COCOeval's own arrays: AP per category, precision-recall curves, largest misses."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from analysis_runs import validate_once
from conftest import tiny_data
from PIL import Image

from mnet_tasks.tasks.detection.coco_eval import (
    coco_stats,
    evaluate_boxes,
    load_coco,
    missed_ground_truth,
    per_category_ap,
    precision_recall,
)

FIXTURE = Path(__file__).parent / "fixtures" / "coco-val2017-2img" / "instances_val2017.json"
IMAGES = [139, 255917]
TINY = tiny_data("detection")


def detections_from_ground_truth(coco, leave_out: set[int], shift: float = 0.0) -> list[dict]:
    """Every object but the crowd and ``leave_out`` as a detection, moved right by ``shift`` x its width, with
    falling scores."""
    objects = [a for a in coco.anns.values() if not a["iscrowd"] and a["id"] not in leave_out]
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "score": 1 - 0.01 * i, "bbox": box}
        for i, a in enumerate(objects)
        for box in [[a["bbox"][0] + shift * a["bbox"][2], *a["bbox"][1:]]]
    ]


def largest_objects(coco, count: int) -> list[int]:
    objects = [a for a in coco.anns.values() if not a["iscrowd"]]
    return [a["id"] for a in sorted(objects, key=lambda a: -a["bbox"][2] * a["bbox"][3])[:count]]


def test_the_mean_of_the_per_category_ap_is_cocoevals_ap():
    coco = load_coco(FIXTURE)
    results = detections_from_ground_truth(coco, set(largest_objects(coco, 3)), shift=0.2)
    evaluator = evaluate_boxes(coco, results, IMAGES)
    stats = coco_stats(evaluator)
    rows = per_category_ap(evaluator)
    assert len(rows) == 80 and (rows[0]["category"], rows[0]["category_id"]) == ("person", 1)
    with_objects = Counter(a["category_id"] for a in coco.anns.values() if not a["iscrowd"])
    assert {row["category_id"]: row["gt_boxes"] for row in rows if row["gt_boxes"]} == with_objects
    scored = [row for row in rows if row["gt_boxes"]]
    assert all(math.isnan(row["ap"]) and math.isnan(row["ap50"]) for row in rows if not row["gt_boxes"])
    assert np.mean([row["ap"] for row in scored]) == pytest.approx(stats["map"], abs=1e-12)
    assert np.mean([row["ap50"] for row in scored]) == pytest.approx(stats["map_50"], abs=1e-12)
    assert len({round(row["ap"], 6) for row in scored}) > 2  # the categories differ: a real check of the mean

    recall, curves = precision_recall(evaluator, 0.5)
    assert len(recall) == 101 and set(curves) == {row["category"] for row in scored}
    assert np.mean(list(curves.values())) == pytest.approx(stats["map_50"], abs=1e-12)


def test_largest_misses_are_the_unmatched_ground_truth_boxes_largest_first():
    coco = load_coco(FIXTURE)
    left_out = {*largest_objects(coco, 2), 1681505, 1941808}  # the two largest objects and the two smallest
    evaluator = evaluate_boxes(coco, detections_from_ground_truth(coco, left_out), IMAGES)
    missed = missed_ground_truth(evaluator)
    assert {a["id"] for a in missed} == left_out  # the crowd region, matched by nothing, is no miss
    areas = [a["bbox"][2] * a["bbox"][3] for a in missed]
    assert areas == sorted(areas, reverse=True)


def test_no_detection_at_all_misses_every_object():
    coco = load_coco(FIXTURE)
    evaluator = evaluate_boxes(coco, [], IMAGES)
    assert set(coco_stats(evaluator).values()) == {0.0}
    assert {row["ap"] for row in per_category_ap(evaluator) if row["gt_boxes"]} == {0.0}
    assert len(missed_ground_truth(evaluator)) == sum(not a["iscrowd"] for a in coco.anns.values())


def test_validation_writes_the_analysis_of_its_detections(tmp_path, data_dir):
    module, metrics = validate_once(TINY, data_dir, tmp_path)
    folder = tmp_path / "analysis"
    assert {p.name for p in folder.iterdir()} == {
        "per_category_ap.csv",
        "per_category_ap.png",
        "pr_curves.png",
        "largest_misses.png",
    }
    with open(folder / "per_category_ap.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["category"] for row in rows] == module.category_names
    coco = module.trainer.val_dataloaders.dataset.coco
    assert sum(int(row["gt_boxes"]) for row in rows) == len(coco.anns)  # every synthetic object, none crowd
    assert np.mean([float(row["ap"]) for row in rows]) == pytest.approx(metrics["val/map"], abs=1e-6)
    assert Image.open(folder / "largest_misses.png").width >= 160  # an untrained SSD misses some objects
