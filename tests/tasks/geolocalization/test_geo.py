"""Geolocation building blocks: great-circle distances, S2 cell partitions, Im2GPS metrics, the photo lists,
the synthetic set, the task's heads and predictions, and the picture."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import s2geometry as s2
import torch
from omegaconf import OmegaConf
from PIL import Image

from mnet_tasks.model_card import Head, ModelCard
from mnet_tasks.tasks.geolocalization.adapter import GeolocalizationAdapter
from mnet_tasks.tasks.geolocalization.baseline import best_constant_guess
from mnet_tasks.tasks.geolocalization.cells import Cell, Partition, build_partition, read_partitions, write_partitions
from mnet_tasks.tasks.geolocalization.data import GeoDataModule, read_geo_list
from mnet_tasks.tasks.geolocalization.distance import EARTH_RADIUS_KM, great_circle_km, to_lat_lon, to_unit_vectors
from mnet_tasks.tasks.geolocalization.metrics import AccuracyWithin, MedianDistance, geo_metrics
from mnet_tasks.tasks.geolocalization.plot import error_segments, plot_locations
from mnet_tasks.tasks.geolocalization.synthetic import GEO_PHOTOS, sample_locations

CITIES = {
    "london": (51.5074, -0.1278),
    "paris": (48.8566, 2.3522),
    "new_york": (40.7128, -74.0060),
    "los_angeles": (34.0522, -118.2437),
    "tokyo": (35.6762, 139.6503),
    "sydney": (-33.8688, 151.2093),
}


def km_north(lat: float, km: float) -> float:
    """The latitude ``km`` due north of ``lat`` (along a meridian, so exactly ``km`` away)."""
    return lat + math.degrees(km / EARTH_RADIUS_KM)


# --- distances ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "published_km"),
    [("london", "paris", 344), ("new_york", "los_angeles", 3936), ("tokyo", "sydney", 7826)],
)
def test_great_circle_distance_of_city_pairs(a, b, published_km):
    (lat1, lon1), (lat2, lon2) = CITIES[a], CITIES[b]
    distance = float(great_circle_km(lat1, lon1, lat2, lon2))
    # s2geometry's angle between the points, independently computed, on the same sphere
    angle = s2.S2LatLng.FromDegrees(lat1, lon1).GetDistance(s2.S2LatLng.FromDegrees(lat2, lon2)).radians()
    assert distance == pytest.approx(angle * EARTH_RADIUS_KM, rel=1e-9)
    assert distance == pytest.approx(published_km, rel=0.005)
    assert float(great_circle_km(lat2, lon2, lat1, lon1)) == pytest.approx(distance, rel=1e-12)


def test_great_circle_special_cases():
    half_circumference = math.pi * EARTH_RADIUS_KM
    assert float(great_circle_km(0.0, 0.0, 0.0, 180.0)) == pytest.approx(half_circumference, rel=1e-12)
    assert float(great_circle_km(90.0, 0.0, -90.0, 0.0)) == pytest.approx(half_circumference, rel=1e-12)
    assert float(great_circle_km(0.0, 0.0, 90.0, 123.0)) == pytest.approx(half_circumference / 2, rel=1e-12)
    # across the antimeridian: one degree of the equator, not 359
    assert float(great_circle_km(0.0, 179.5, 0.0, -179.5)) == pytest.approx(half_circumference / 180, rel=1e-9)
    assert float(great_circle_km(51.5, -0.13, 51.5, -0.13)) == 0.0
    lats = torch.tensor([10.0, 20.0])
    assert great_circle_km(lats, 0.0, lats[:, None], 0.0).shape == (2, 2)  # broadcasts


def test_unit_vectors_round_trip():
    points = torch.tensor([[51.5, -0.13], [-33.9, 151.2], [0.0, -179.9], [89.0, 45.0]], dtype=torch.float64)
    back = to_lat_lon(to_unit_vectors(points[:, 0], points[:, 1]))
    assert torch.allclose(back, points, atol=1e-9)


# --- partitions -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_locations() -> np.ndarray:
    """Clustered like a photo collection, plus points at the poles, on the antimeridian and 100 at one spot."""
    locations = sample_locations(np.random.default_rng(3), 3000, background_share=0.2)
    extra = [(90.0, 0.0), (-90.0, 10.0), (10.0, 180.0), (10.0, -180.0), *[(48.8584, 2.2945)] * 100]
    return np.concatenate([locations, np.array(extra)])


def test_partition_invariants(photo_locations):
    lat, lon = photo_locations[:, 0], photo_locations[:, 1]
    partition = build_partition("cells", lat, lon, min_per_cell=12, max_per_cell=80, min_level=2, max_level=12)
    assert len(partition) > 20 and partition.dropped

    index = partition.assign(lat, lon)
    dropped_index = Partition("dropped", partition.dropped).assign(lat, lon)
    # every photo lies in exactly one kept cell or in a dropped cell, never both
    assert np.all((index >= 0) != (dropped_index >= 0))
    counts = np.bincount(index[index >= 0], minlength=len(partition))
    assert counts.tolist() == [cell.count for cell in partition.cells]
    dropped_counts = np.bincount(dropped_index[dropped_index >= 0], minlength=len(partition.dropped))
    assert dropped_counts.tolist() == [cell.count for cell in partition.dropped]
    assert counts.sum() + dropped_counts.sum() == len(lat)

    for cell in partition.cells:
        assert cell.count >= 12
        assert cell.count <= 80 or cell.level == 12  # only the finest level may stay crowded
        assert 2 <= cell.level <= 12
        if cell.level > 2:  # a cell exists because its parent was too crowded
            parent = s2.S2CellId.FromToken(cell.token).parent(cell.level - 1)
            parent_cell = Partition("parent", (Cell(parent.ToToken(), cell.level - 1, 0, 0.0, 0.0),))
            assert (parent_cell.assign(lat, lon) == 0).sum() > 80
    assert all(cell.count < 12 for cell in partition.dropped)
    eiffel = partition.cells[partition.assign([48.8584], [2.2945])[0]]
    assert eiffel.level == 12 and eiffel.count >= 100  # the 100 identical photos cannot be split further

    # centroids: the normalised 3-D mean of the cell's photos, inside the cell
    for cell_index in (0, len(partition) // 2, len(partition) - 1):
        members = index == cell_index
        mean = to_unit_vectors(torch.tensor(lat[members]), torch.tensor(lon[members])).mean(0)
        expected = to_lat_lon(mean).tolist()
        cell = partition.cells[cell_index]
        assert [cell.latitude, cell.longitude] == pytest.approx(expected, abs=1e-9)
        assert partition.assign([cell.latitude], [cell.longitude])[0] == cell_index


def test_partition_is_deterministic_and_independent_of_order(photo_locations):
    lat, lon = photo_locations[:, 0], photo_locations[:, 1]
    first = build_partition("cells", lat, lon, 12, 80)
    order = np.random.default_rng(0).permutation(len(lat))
    shuffled = build_partition("cells", lat[order], lon[order], 12, 80)
    assert [(c.token, c.level, c.count) for c in first.cells] == [(c.token, c.level, c.count) for c in shuffled.cells]
    assert np.allclose(first.centroids, shuffled.centroids, atol=1e-9, rtol=0)
    ids = [s2.S2CellId.FromToken(token).id() for token in first.tokens]
    assert ids == sorted(ids)


def test_partition_thresholds_are_checked():
    with pytest.raises(ValueError, match="min_per_cell <= max_per_cell"):
        build_partition("cells", [0.0], [0.0], min_per_cell=20, max_per_cell=10)
    with pytest.raises(ValueError, match="at least 2 cells"):
        build_partition("cells", [0.0, 0.1], [0.0, 0.1], min_per_cell=5, max_per_cell=10)


def test_partition_csv_round_trip_and_errors(tmp_path, photo_locations):
    lat, lon = photo_locations[:, 0], photo_locations[:, 1]
    coarse = build_partition("coarse", lat, lon, 30, 400)
    fine = build_partition("fine", lat, lon, 10, 60)
    path = write_partitions(tmp_path / "cells.csv", [coarse, fine])
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["partition", "token", "level", "count", "latitude", "longitude"]
    assert len(rows) == 1 + len(coarse) + len(fine)
    again = read_partitions(path)
    assert [p.name for p in again] == ["coarse", "fine"]
    assert again[0].cells == coarse.cells and again[1].cells == fine.cells  # floats survive exactly

    rows[3][1] = "not-a-token"  # the fourth line of the file
    broken = tmp_path / "broken.csv"
    with open(broken, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(ValueError, match=r"broken\.csv, line 4: 'not-a-token' is not a valid S2 cell token"):
        read_partitions(broken)
    parent = s2.S2CellId.FromToken(coarse.tokens[0]).parent(1)
    overlapping = tmp_path / "overlapping.csv"
    with open(overlapping, "w", newline="") as f:
        csv.writer(f).writerows([rows[0], ["coarse", parent.ToToken(), 1, 5, 0.0, 0.0], rows[1]])
    with pytest.raises(ValueError, match=r"overlapping\.csv: .*must be disjoint"):
        read_partitions(overlapping)


# --- metrics --------------------------------------------------------------------------------------


def computed(metrics) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.compute().items()}


def test_a_prediction_at_the_truth_counts_at_every_scale():
    truth = torch.tensor(list(CITIES.values()), dtype=torch.float64)
    metrics = geo_metrics()
    metrics.update(truth.clone(), truth)
    assert computed(metrics) == {
        "acc_1km": 1.0,
        "acc_25km": 1.0,
        "acc_200km": 1.0,
        "acc_750km": 1.0,
        "acc_2500km": 1.0,
        "median_km": 0.0,
    }


def test_accuracy_thresholds_and_median():
    lat0, lon0 = 10.0, 20.0
    errors_km = [0.5, 24.9, 25.1, 199.0, 740.0, 800.0, 2400.0, 2600.0, 9000.0]
    predicted = torch.tensor([[km_north(lat0, km), lon0] for km in errors_km], dtype=torch.float64)
    truth = torch.tensor([[lat0, lon0]] * len(errors_km), dtype=torch.float64)
    metrics = geo_metrics()
    for half in (slice(0, 4), slice(4, None)):  # two batches accumulate
        metrics.update(predicted[half], truth[half])
    assert computed(metrics) == pytest.approx(
        {
            "acc_1km": 1 / 9,
            "acc_25km": 2 / 9,
            "acc_200km": 4 / 9,
            "acc_750km": 5 / 9,
            "acc_2500km": 7 / 9,
            "median_km": 740.0,
        }
    )
    median = MedianDistance()
    median.update(predicted, truth)
    median.update(predicted[:1], truth[:1])  # ten errors: numpy's median, the mean of the two middle ones
    assert float(median.compute()) == pytest.approx(np.median([*errors_km, 0.5]), rel=1e-6)
    assert float(AccuracyWithin(0.0).to(torch.float64)(truth, truth)) == 1.0


def test_metric_states_merge_as_under_ddp():
    """Two processes' states reduce with each state's dist_reduce_fx to the single-process result."""
    rng = np.random.default_rng(0)
    truth = torch.tensor(sample_locations(rng, 40, 0.3))
    predicted = torch.tensor(sample_locations(rng, 40, 0.3))
    whole, rank0, rank1 = geo_metrics(), geo_metrics(), geo_metrics()
    whole.update(predicted, truth)
    rank0.update(predicted[:25], truth[:25])
    rank1.update(predicted[25:], truth[25:])
    for name, metric in rank0.items():
        metric.merge_state(rank1[name])
    assert computed(rank0) == computed(whole)
    assert 0 < computed(whole)["acc_2500km"] < 1


def test_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        AccuracyWithin(25.0).update(torch.zeros(3, 2), torch.zeros(3, 3))


def test_best_constant_guess_picks_the_best_single_location_per_scale(monkeypatch):
    from mnet_tasks.tasks.geolocalization import baseline

    paris, london = CITIES["paris"], CITIES["london"]  # 344 km apart
    truth = np.array([paris, paris, (km_north(paris[0], 30.0), paris[1]), london])
    expected = {"acc_1km": 0.5, "acc_25km": 0.5, "acc_200km": 0.75, "acc_750km": 1.0, "acc_2500km": 1.0}
    # guessing Paris: two photos within 1 and 25 km, three within 200 km, all four within 750 km; its median error
    # is the metric's median (the mean of the middle two of 0, 0, 30 and 344 km), lower than London's
    metric = MedianDistance()
    metric.update(torch.tensor([paris] * 4, dtype=torch.float64), torch.tensor(truth))
    expected["median_km"] = float(metric.compute())
    assert expected["median_km"] == pytest.approx(15.0, rel=1e-9)
    assert best_constant_guess(np.array([london, paris]), truth) == pytest.approx(expected)
    monkeypatch.setattr(baseline, "_BLOCK_ELEMENTS", 1)  # one candidate per block: the same answer
    assert best_constant_guess(np.array([paris, london]), truth) == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"candidates must be a non-empty \(N, 2\)"):
        best_constant_guess(np.zeros((0, 2)), truth)


# --- photo lists ----------------------------------------------------------------------------------


def write_images(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), (90, 120, 200)).save(folder / name)


def test_bad_rows_are_counted_reported_with_line_numbers_and_not_used(tmp_path, caplog):
    write_images(tmp_path, [f"img/{i}.jpg" for i in range(12)])
    lines = [
        "image,latitude,longitude",
        "img/0.jpg,51.5,-0.12",  # line 2: fine
        "img/1.jpg,91.0,10.0",  # 3: latitude out of range
        "img/2.jpg,45.0,180.5",  # 4: longitude out of range
        "img/3.jpg,nan,10.0",  # 5: NaN
        "img/4.jpg,abc,10.0",  # 6: unparsable
        "img/missing.jpg,10.0,10.0",  # 7: no such image
        "img/5.jpg,-90.0,-180.0",  # 8: fine (the edges are valid)
        "",  # 9: blank, ignored
        "img/6.jpg,inf,0",  # 10: infinite
        "img/7.jpg,10.0",  # 11: too few fields
        ",10.0,10.0",  # 12: no image path
        "img/8.jpg,35.7,139.7",  # 13: fine
    ]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    listed = read_geo_list(tmp_path / "train.csv", tmp_path)
    assert listed.images == [str(tmp_path / "img" / name) for name in ("0.jpg", "5.jpg", "8.jpg")]
    assert listed.locations.tolist() == [[51.5, -0.12], [-90.0, -180.0], [35.7, 139.7]]
    assert [(row.line, row.problem) for row in listed.bad_rows] == [
        (3, "bad coordinates"),
        (4, "bad coordinates"),
        (5, "bad coordinates"),
        (6, "unparsable coordinates"),
        (7, "missing image"),
        (10, "bad coordinates"),
        (11, "too few fields"),
        (12, "no image path"),
    ]
    assert "img/missing.jpg" in listed.bad_rows[4].detail

    (tmp_path / "test.csv").write_text("image,latitude,longitude\nimg/9.jpg,1.0,2.0\nimg/10.jpg,1.0,200\n")
    run = tmp_path / "run"
    module = GeoDataModule(root=str(tmp_path), output_dir=str(run), image_size=32, num_workers=0)
    with caplog.at_level(logging.WARNING, logger="mnet_tasks.tasks.geolocalization.data"):
        module.geo_list("train")
        module.geo_list("val")
    assert "skipped 8 of 11 rows" in caplog.text and "lines 3, 4, 5, 6, 7, 10, 11, 12" in caplog.text
    assert "4 bad coordinates, 1 unparsable coordinates, 1 missing image" in caplog.text
    with open(run / "bad_rows.csv") as f:
        reported = [(Path(r["file"]).name, int(r["line"]), r["problem"]) for r in csv.DictReader(f)]
    assert len(reported) == 9 and reported[-1] == ("test.csv", 3, "bad coordinates")


def test_a_row_with_more_fields_than_the_header_is_a_bad_row(tmp_path):
    write_images(tmp_path, ["paris.jpg", "london.jpg"])
    # Paris at 48,85 / 2,35 written with unquoted decimal commas: five fields under a three-column header.
    (tmp_path / "train.csv").write_text("image,latitude,longitude\nparis.jpg,48,85,2,35\nlondon.jpg,51.5,-0.12\n")
    listed = read_geo_list(tmp_path / "train.csv", tmp_path)
    assert listed.images == [str(tmp_path / "london.jpg")]
    assert [(row.source, row.line, row.problem) for row in listed.bad_rows] == [
        (tmp_path / "train.csv", 2, "too many fields")
    ]
    assert listed.bad_rows[0].detail == "5 fields, the header has 3 (a decimal comma in an unquoted number?)"


def test_lists_and_saved_cells_with_a_utf8_byte_order_mark_are_read(tmp_path, photo_locations):
    write_images(tmp_path, ["paris.jpg"])
    # Spreadsheet exports ("CSV UTF-8") start with a byte-order mark.
    (tmp_path / "train.csv").write_text("image,latitude,longitude\nparis.jpg,48.85,2.35\n", encoding="utf-8-sig")
    listed = read_geo_list(tmp_path / "train.csv", tmp_path)
    assert listed.locations.tolist() == [[48.85, 2.35]] and not listed.bad_rows

    partition = build_partition("cells", photo_locations[:, 0], photo_locations[:, 1], 10, 60)
    path = write_partitions(tmp_path / "cells.csv", [partition])
    path.write_text(path.read_text(), encoding="utf-8-sig")
    assert read_partitions(path)[0].cells == partition.cells


def test_mp16_style_tsv_header_and_missing_columns(tmp_path):
    write_images(tmp_path / "mp16", ["17/e0/3427262463.jpg"])
    (tmp_path / "mp16.tsv").write_text("IMG_ID\tAUTHOR\tLAT\tLON\n17/e0/3427262463.jpg\tsomeone\t40.75\t-73.99\n")
    listed = read_geo_list(tmp_path / "mp16.tsv", tmp_path / "mp16")
    assert listed.locations.tolist() == [[40.75, -73.99]] and not listed.bad_rows
    (tmp_path / "nolat.csv").write_text("image,lon\na.jpg,1\n")
    with pytest.raises(ValueError, match=r"nolat\.csv: .* no latitude column"):
        read_geo_list(tmp_path / "nolat.csv", tmp_path)


def test_a_root_without_the_lists_fails_naming_the_key(tmp_path):
    module = GeoDataModule(root=str(tmp_path), image_size=32)
    with pytest.raises(FileNotFoundError, match=r"train\.csv \(data\.train_csv"):
        module.prepare_data()
    with pytest.raises(ValueError, match=r"data\.partitions\[0\]"):
        GeoDataModule(root=str(tmp_path), partitions=[{"name": "cells", "max_per_cell": 5}])


# --- synthetic data and the data module -------------------------------------------------------------


SMALL = {"train_size": 300, "test_size": 40, "image_size": 48, "seed": 0}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return GEO_PHOTOS.generate(tmp_path_factory.mktemp("geo") / "synthetic", **SMALL)


def test_synthetic_set_is_written_in_the_list_layout(synthetic_root, tmp_path):
    for split, size in (("train", 300), ("test", 40)):
        listed = read_geo_list(synthetic_root / f"{split}.csv", synthetic_root)
        assert len(listed.images) == size and not listed.bad_rows
        assert listed.images[0] == str(synthetic_root / split / "000000.jpg")
    with Image.open(synthetic_root / "test" / "000039.jpg") as image:
        assert (image.format, image.size) == ("JPEG", (48, 48))
    again = GEO_PHOTOS.generate(tmp_path / "again", **SMALL)
    assert (again / "train.csv").read_bytes() == (synthetic_root / "train.csv").read_bytes()
    assert (again / "train" / "000007.jpg").read_bytes() == (synthetic_root / "train" / "000007.jpg").read_bytes()


def test_synthetic_locations_are_uneven_like_photo_collections():
    locations = sample_locations(np.random.default_rng(0), 4000, background_share=0.15)
    lat, lon = torch.tensor(locations[:, 0]), torch.tensor(locations[:, 1])
    # a third of the photos lie within 200 km of the five most popular places
    top5 = torch.tensor([[40.71, -74.01], [51.51, -0.13], [48.86, 2.35], [37.77, -122.42], [34.05, -118.24]])
    near = (great_circle_km(lat[:, None], lon[:, None], top5[:, 0], top5[:, 1]) < 200).any(1)
    assert 0.3 < near.double().mean() < 0.6
    assert (lat > 0).double().mean() > 0.75  # mostly the northern hemisphere, like Flickr


def test_data_module_builds_saves_and_reuses_the_partitions(synthetic_root, tmp_path):
    specs = [
        {"name": "coarse", "min_per_cell": 10, "max_per_cell": 100},
        {"name": "fine", "min_per_cell": 3, "max_per_cell": 25},
    ]
    kwargs = {"root": str(synthetic_root), "image_size": 40, "num_workers": 0, "batch_size": 8}
    module = GeoDataModule(**kwargs, partitions=specs, output_dir=str(tmp_path / "run"))
    module.prepare_data()
    heads = module.head_kwargs()["partitions"]
    assert [p["name"] for p in heads] == ["coarse", "fine"] and len(heads[0]["tokens"]) < len(heads[1]["tokens"])
    assert read_partitions(tmp_path / "run" / "cells.csv") == module.partitions
    assert module.num_classes == len(heads[0]["tokens"]) + len(heads[1]["tokens"])
    assert module.class_names[0] == f"coarse/{heads[0]['tokens'][0]}"

    module.setup("fit")
    images, locations, labels = next(iter(module.train_dataloader()))
    assert images.shape == (8, 3, 40, 40) and locations.dtype == torch.float64 and labels.shape == (8, 2)
    assert (labels >= 0).any(1).all()  # photos in no kept cell are left out of training
    listed = module.geo_list("train")
    assert len(module.train_set) == int((module.cell_labels(listed.locations) >= 0).any(1).sum())
    assert len(module.val_set) == 40  # every evaluation photo is scored, in a kept cell or not

    reused = GeoDataModule(**kwargs, partition_file=str(tmp_path / "run" / "cells.csv"), partitions=[])
    assert reused.head_kwargs() == module.head_kwargs()


def test_baseline_command_reports_every_scale_of_the_configured_data(synthetic_root, capsys):
    from mnet_tasks.tasks.geolocalization.baseline import main

    report = main(["task=geolocalization", f"data.root={synthetic_root}"])
    printed = capsys.readouterr().out
    assert f"best constant guess on {synthetic_root.name}: 40 test photos" in printed
    shares = [report[f"acc_{scale}km"] for scale in (1, 25, 200, 750, 2500)]
    assert shares == sorted(shares) and 0 < shares[-1] < 1  # nested scales; one place cannot serve the globe
    assert f"acc_2500km   {shares[-1]:.4f}" in printed and report["median_km"] > 0


# --- the task -------------------------------------------------------------------------------------


def two_level_partitions() -> tuple[Partition, Partition]:
    locations = sample_locations(np.random.default_rng(1), 2000, background_share=0.1)
    lat, lon = locations[:, 0], locations[:, 1]
    return build_partition("coarse", lat, lon, 20, 400), build_partition("fine", lat, lon, 10, 60)


def make_task(partitions, *overrides):
    from mnet_tasks.config import compose_config
    from mnet_tasks.task_module import build_task

    cfg = compose_config(["task=geolocalization", "backbone.alpha=0.25", "backbone.resolution=64", *overrides])
    return build_task(cfg, partitions=[p.to_hparams() for p in partitions])


def test_task_has_one_head_per_partition_and_predicts_centroids():
    coarse, fine = two_level_partitions()
    task = make_task([coarse, fine]).eval()
    logits = task(torch.randn(2, 3, 64, 64))
    assert {name: tuple(v.shape) for name, v in logits.items()} == {"coarse": (2, len(coarse)), "fine": (2, len(fine))}
    head_params = sum((task.backbone.num_features + 1) * len(p) for p in (coarse, fine))
    assert sum(p.numel() for p in task.parameters()) == sum(p.numel() for p in task.backbone.parameters()) + head_params

    chosen = torch.tensor([3, len(fine) - 1])
    scores = {"coarse": torch.zeros(2, len(coarse)), "fine": torch.full((2, len(fine)), -5.0)}
    scores["fine"][torch.arange(2), chosen] = 5.0
    assert torch.equal(task.locations_from_logits(scores), torch.as_tensor(fine.centroids)[chosen])


def test_hierarchy_prediction_weighs_the_fine_cells_by_their_coarse_cells():
    coarse, fine = two_level_partitions()
    task = make_task([coarse, fine], "task.prediction=hierarchy").eval()
    parents = torch.as_tensor(coarse.assign(fine.centroids[:, 0], fine.centroids[:, 1]))
    a, b = 0, int(torch.nonzero(parents != parents[0])[0])  # two fine cells in different coarse cells
    logits = {"coarse": torch.zeros(1, len(coarse)), "fine": torch.full((1, len(fine)), -10.0)}
    logits["fine"][0, a], logits["fine"][0, b] = 1.0, 0.5  # the fine head alone prefers cell a
    logits["coarse"][0, parents[b]] = 4.0  # but b's coarse cell is much more likely
    assert torch.equal(task.locations_from_logits(logits)[0], torch.as_tensor(fine.centroids[b]))
    top_cell = make_task([coarse, fine]).eval()
    assert torch.equal(top_cell.locations_from_logits(logits)[0], torch.as_tensor(fine.centroids[a]))


def test_loss_ignores_photos_outside_the_cells():
    coarse, fine = two_level_partitions()
    task = make_task([coarse, fine])
    logits = {"coarse": torch.randn(4, len(coarse)), "fine": torch.randn(4, len(fine))}
    labels = torch.tensor([[0, -1], [1, 2], [-1, -1], [2, 5]])
    expected = torch.nn.functional.cross_entropy(logits["coarse"][[0, 1, 3]], labels[[0, 1, 3], 0])
    expected = expected + torch.nn.functional.cross_entropy(logits["fine"][[1, 3]], labels[[1, 3], 1])
    assert torch.allclose(task.cell_loss(logits, labels), expected)
    assert float(task.cell_loss(logits, torch.full((4, 2), -1))) == 0.0  # no NaN from an empty head


def test_task_options_are_checked():
    from hydra.errors import InstantiationException

    coarse, fine = two_level_partitions()
    with pytest.raises(InstantiationException, match=r"task\.predict_head='middle'"):
        make_task([coarse, fine], "task.predict_head=middle")
    with pytest.raises(InstantiationException, match=r"task\.prediction must"):
        make_task([coarse, fine], "task.prediction=mean")
    with pytest.raises(InstantiationException, match=r"task\.partitions is empty"):
        make_task([])


# --- the picture ----------------------------------------------------------------------------------


def test_error_lines_take_the_short_way_round(tmp_path):
    true = np.array([[10.0, 170.0], [0.0, 0.0]])
    predicted = np.array([[20.0, -170.0], [5.0, 5.0]])
    segments = error_segments(true, predicted)
    assert segments.tolist() == [
        [[0.0, 0.0], [5.0, 5.0]],
        [[170.0, 10.0], [180.0, 15.0]],
        [[-180.0, 15.0], [-170.0, 20.0]],
    ]
    path = plot_locations(tmp_path / "map.png", true, predicted, "a title")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1200, 640)


def test_bare_task_has_the_cost_of_the_papers_mobilenet_planet():
    """Table 11's MobileNet PlaNet: about 13 M parameters (3 M body, 10 M classifier) and 0.58 B MAdds."""
    from mnet_tasks.config import compose_config
    from mnet_tasks.cost import profile_model
    from mnet_tasks.task_module import build_task

    cfg = compose_config(["task=geolocalization", "backbone.alpha=1.0", "backbone.rho=1.0"])
    task = build_task(cfg)  # the placeholder head of 10,000 cells, no data
    cost = profile_model(task, cfg.input_size)
    assert cost.madds / 1e9 == pytest.approx(0.58, abs=0.005)
    assert cost.params / 1e6 == pytest.approx(13.0, abs=0.5)
    assert cost.params_by_layer_type["fully connected"] / 1e6 == pytest.approx(10.0, abs=0.3)
    with pytest.raises(RuntimeError, match="bare cost profile"):
        task.locate(torch.zeros(1, 3, 64, 64))


def test_predictions_name_the_cell_with_its_centroid_and_the_top_k(tmp_path: Path) -> None:
    adapter = GeolocalizationAdapter()
    head = Head("cells", 3, labels=["89", "8c", "94"], centroids=[[1, 2], [3, 4], [5, 6]])
    card = ModelCard("task", "task", 0.25, 64, 1.0, [head], head.name, adapter.output_names([head]), "softmax")
    outputs = {"logits": np.zeros((1, 3)), "probabilities": np.array([[0.2, 0.5, 0.3]])}
    records = adapter.describe(card, outputs, ["c.jpg"], OmegaConf.create({"top_k": 2}))
    assert (records[0]["label"], records[0]["latitude"], records[0]["longitude"]) == ("8c", 3, 4)
    assert [entry["label"] for entry in records[0]["top_k"]] == ["8c", "94"]
    adapter.write_predictions(tmp_path, card, records)
    rows = list(csv.reader((tmp_path / "predictions.csv").read_text().splitlines()))
    assert rows == [
        ["image", "label", "probability", "latitude", "longitude", "top_k"],
        ["c.jpg", "8c", "0.500000", "3", "4", "8c:0.500000 94:0.300000"],
    ]
