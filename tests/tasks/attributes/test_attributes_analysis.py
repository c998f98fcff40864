"""The attributes' error analysis: one bar per attribute, the AP the module computed and logged."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from analysis_runs import validate_once
from conftest import tiny_data
from PIL import Image

TINY_FACES = tiny_data("attributes")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_attribute_bars_hold_the_logged_per_attribute_ap(tmp_path, data_dir):
    module, metrics = validate_once(TINY_FACES, data_dir, tmp_path)
    rows = read_rows(tmp_path / "analysis" / "attribute_ap.csv")
    assert [row["attribute"] for row in rows] == module.attribute_names
    assert list(rows[0]) == ["attribute", "ap", "positive_rate"]
    history = read_rows(tmp_path / "attribute_ap.csv")  # the run's table of every validation, to 4 decimals
    for row, logged in zip(rows, history, strict=True):
        assert float(row["ap"]) == pytest.approx(float(logged["ap"]), abs=5e-5), row["attribute"]
    defined = [float(row["ap"]) for row in rows if not math.isnan(float(row["ap"]))]
    assert sum(defined) / len(defined) == pytest.approx(metrics["val/map"], abs=1e-6)  # the mean marked on the bars
    assert Image.open(tmp_path / "analysis" / "attribute_ap.png").height > 20 * len(rows)  # a bar per attribute
