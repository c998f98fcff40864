"""Classification's error analysis: the confusion matrix, the most confused pairs, the most confident mistakes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from analysis_runs import validate_once
from conftest import TINY_RUN
from PIL import Image

from mnet_tasks.config import compose_config
from mnet_tasks.run import run
from mnet_tasks.tasks.classification.analysis import confused_pairs, confusion_counts, error_analysis

SHAPES = [  # the data of QUICK: 4 classes, 4 validation images each
    "data.synthetic.num_classes=4",
    "data.synthetic.train_per_class=8",
    "data.synthetic.val_per_class=4",
    "data.synthetic.image_size=48",
    "data.batch_size=16",
]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_confusion_counts_are_numpys_count():
    rng = np.random.default_rng(0)
    labels, predicted = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    expected = np.zeros((7, 7), dtype=np.int64)
    np.add.at(expected, (labels, predicted), 1)
    counts = confusion_counts(torch.as_tensor(labels), torch.as_tensor(predicted), 7)
    assert np.array_equal(counts.numpy(), expected)


def test_confused_pairs_are_the_largest_off_diagonal_cells():
    counts = np.array([[5, 3, 0], [1, 9, 3], [0, 6, 2]])
    rows = confused_pairs(counts, ["a", "b", "c"], top=3)
    assert [(r["true"], r["predicted"], r["count"]) for r in rows] == [("c", "b", 6), ("a", "b", 3), ("b", "c", 3)]
    assert rows[0]["share_of_true"] == 6 / 8
    assert confused_pairs(np.diag([4, 4]), ["a", "b"]) == []  # no mistake, no pair


def test_many_classes_show_their_most_confused_pairs_instead_of_the_matrix():
    counts = np.random.default_rng(1).integers(0, 3, (40, 40))
    names = [f"class{i}" for i in range(40)]
    pictures, tables = error_analysis(counts, [], names)
    assert set(pictures) == {"confusion_matrix"} and set(tables) == {"confused_pairs"}  # no 40x40 table
    assert len(tables["confused_pairs"]) == 20


def test_a_run_writes_its_analysis_matching_its_metrics(tmp_path, data_dir):
    overrides = [*TINY_RUN, *SHAPES, "task.error_analysis=true"]  # the switch, through the config
    record = run(compose_config([*overrides, f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path}"]))
    folder = tmp_path / "analysis"
    names = ["circle", "square", "star", "triangle"]
    matrix = read_rows(folder / "confusion_matrix.csv")
    assert [row["true/predicted"] for row in matrix] == names  # the DataModule's class names
    counts = np.array([[int(row[name]) for name in names] for row in matrix])
    assert counts.sum() == 16 and (counts.sum(1) == 4).all()  # every validation image once, in its true row
    top1 = record["metrics"]["final"]["val/top1"]
    assert np.trace(counts) / 16 == top1

    mistakes = read_rows(folder / "confident_mistakes.csv")
    assert len(mistakes) == 16 - np.trace(counts)  # up to 16 are kept: here all of them
    assert all(row["true"] != row["predicted"] for row in mistakes)
    confidences = [float(row["confidence"]) for row in mistakes]
    assert confidences == sorted(confidences, reverse=True) and all(1 / 4 <= c <= 1 for c in confidences)
    pairs = read_rows(folder / "confused_pairs.csv")
    assert sum(int(row["count"]) for row in pairs) == len(mistakes)
    assert Image.open(folder / "confusion_matrix.png").size[0] > 0
    assert Image.open(folder / "confident_mistakes.png").size[0] >= 4 * 160  # 4 images a row, enlarged to 160 px
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"


def test_switched_off_nothing_is_written(tmp_path, data_dir):
    module, _ = validate_once(SHAPES, data_dir, tmp_path, analysis=False)
    assert module.errors is None
    assert not (tmp_path / "analysis").exists()
