"""Geolocation's error analysis: the error CDF, whose values at the Im2GPS scales are the logged accuracies."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from analysis_runs import validate_once
from conftest import tiny_data
from PIL import Image

from mnet_tasks.tasks.geolocalization.plot import error_cdf_figure, within_shares

TINY_PHOTOS = tiny_data("geolocalization")


def test_shares_within_count_each_distance_up_to_and_including_the_scale():
    distances = np.array([0.0, 1.0, 1.5, 25.0, 30.0, 800.0, 5000.0, 19000.0])
    assert within_shares(distances, (1, 25, 200, 750, 2500)).tolist() == [2 / 8, 4 / 8, 5 / 8, 5 / 8, 6 / 8]
    with pytest.raises(ValueError, match="non-empty"):
        error_cdf_figure(np.array([]), (1, 25))


def test_error_cdf_at_the_scales_equals_the_logged_accuracies(tmp_path, data_dir):
    # Im2GPS's scales, and half the earth's circumference, within which every photo lies: a share of 1 to match.
    scales = [1, 25, 200, 750, 2500, 20100]
    _, metrics = validate_once([*TINY_PHOTOS, f"task.distance_scales_km={scales}"], data_dir, tmp_path)
    with open(tmp_path / "analysis" / "error_cdf.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [float(row["scale_km"]) for row in rows] == scales
    for row in rows:
        assert float(row["share_within"]) == pytest.approx(metrics[row["metric"]], abs=1e-7), row["metric"]
    assert metrics["val/acc_20100km"] == 1.0
    assert Image.open(tmp_path / "analysis" / "error_cdf.png").size == (800, 500)
    assert (tmp_path / "geolocation" / "val_epoch000.png").is_file()  # the map, as before
