"""Geolocation end to end: synthetic data -> cells -> training -> Im2GPS metrics, pictures, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException

from mnet_tasks import MobileNetV1
from mnet_tasks.config import compose_config
from mnet_tasks.run import run
from mnet_tasks.tasks.geolocalization.baseline import best_constant_guess
from mnet_tasks.tasks.geolocalization.cells import read_partitions
from mnet_tasks.tasks.geolocalization.data import read_geo_list
from mnet_tasks.tasks.geolocalization.synthetic import GEO_PHOTOS

SCALES = ("val/acc_1km", "val/acc_25km", "val/acc_200km", "val/acc_750km", "val/acc_2500km")
TINY = [
    "task=geolocalization",
    "backbone.alpha=0.25",
    "backbone.resolution=64",
    "data.synthetic.train_size=240",
    "data.synthetic.test_size=40",
    "data.synthetic.image_size=64",
    "data.partitions=[{name:cells,min_per_cell:5,max_per_cell:40}]",
    "data.batch_size=32",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
]


def best_constant_guess_of(dataset: Path, cells_csv: Path) -> dict[str, float]:
    """The val metrics of the best single guess for every photo (any training photo's location or cell centroid):
    an upper bound of what a model that ignores the picture can score, at 2500 km and for the median."""
    train = read_geo_list(dataset / "train.csv", dataset).locations
    test = read_geo_list(dataset / "test.csv", dataset).locations
    candidates = np.concatenate([train, *(partition.centroids for partition in read_partitions(cells_csv))])
    return best_constant_guess(candidates, test, [2500])


@pytest.mark.learning
def test_geolocation_beats_the_best_constant_guess_at_the_continent_scale(tmp_path, data_dir, learning_seed, bars):
    """0.25 MobileNet-64, 800 training photos, 10 epochs, against the best constant guess of its 300 test photos
    (36.7% within 2,500 km, median 4,563 km). The bars come from the spread in tests/README.md."""
    synthetic = {"train_size": 800, "test_size": 300, "image_size": 64, "seed": 0}
    cfg = compose_config(
        [
            "task=geolocalization",
            "backbone.alpha=0.25",
            "backbone.resolution=64",
            *(f"data.synthetic.{key}={value}" for key, value in synthetic.items()),
            "data.batch_size=16",
            "data.num_workers=0",
            "trainer.max_epochs=10",
            "trainer.enable_progress_bar=false",
            "callbacks=none",
            f"seed={learning_seed}",
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={tmp_path}",
        ]
    )
    record = run(cfg)
    constant = best_constant_guess_of(data_dir / GEO_PHOTOS.folder_name(**synthetic), tmp_path / "cells.csv")
    final, best = record["metrics"]["final"], record["metrics"]["best"]
    print(
        f"2500 km: model {final['val/acc_2500km']:.3f} (best epoch {best['val/acc_2500km']:.3f}), best constant guess "
        f"{constant['acc_2500km']:.3f}; median {final['val/median_km']:.0f} km, constant {constant['median_km']:.0f} km"
    )
    # A model that ignores the picture scores at most the constant guess: 0 above it, and a median ratio of 1 or more.
    acc_gain = final["val/acc_2500km"] - constant["acc_2500km"]
    bars.measure("val/acc_2500km above the best constant guess", acc_gain, at_least=0.08)
    bars.measure(
        "val/median_km over the best constant guess's", final["val/median_km"] / constant["median_km"], at_most=0.65
    )
    bars.check()
    assert set(final) == {*SCALES, "val/median_km", "val/loss", "val/images"}  # val/images: photos scored
    assert [final[name] for name in SCALES] == sorted(final[name] for name in SCALES)  # nested scales
    assert (tmp_path / "geolocation" / "val_epoch009.png").is_file()


def test_a_checkpoint_evaluates_to_the_same_numbers_and_refuses_other_cells(tmp_path, data_dir):
    common = [*TINY, f"paths.data_dir={data_dir}"]
    trained = run(compose_config([*common, "trainer.max_epochs=1", f"paths.output_dir={tmp_path / 'train'}"]))
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    assert trained["status"] == "completed" and checkpoint.is_file()
    assert trained["monitor"] == "val/acc_750km"
    hparams = torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    assert len(hparams["partitions"][0]["tokens"]) == len(read_partitions(tmp_path / "train" / "cells.csv")[0])

    # the same data rebuilds the same cells; a saved cells.csv gives them without the training list
    evaluate = [*common, "train=false", f"ckpt_path={checkpoint}"]
    again = run(compose_config([*evaluate, f"paths.output_dir={tmp_path / 'eval'}"]))
    reused = run(
        compose_config(
            [
                *evaluate,
                f"data.partition_file={tmp_path / 'train' / 'cells.csv'}",
                "data.train_csv=absent.csv",
                f"paths.output_dir={tmp_path / 'reused'}",
            ]
        )
    )
    for record in (again, reused):
        assert record["mode"] == "eval" and record["status"] == "completed"
        for name in (*SCALES, "val/median_km"):
            assert record["metrics"]["final"][name] == pytest.approx(trained["metrics"]["final"][name])
    assert (tmp_path / "eval" / "geolocation" / "val_epoch000.png").is_file()

    other_cells = "data.partitions=[{name:cells,min_per_cell:5,max_per_cell:20}]"
    with pytest.raises(ValueError, match=r"other cells .*data\.partition_file="):
        run(compose_config([*evaluate, other_cells, f"paths.output_dir={tmp_path / 'other'}"]))
    failed = json.loads((tmp_path / "other" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "data.partition_file" in failed["error"]


def test_three_heads_with_hierarchical_prediction_run(tmp_path, data_dir):
    cfg = compose_config(
        [
            *TINY,
            "experiment=geolocalization_hierarchy",
            "data.partitions=[{name:coarse,min_per_cell:8,max_per_cell:120},"
            "{name:middle,min_per_cell:5,max_per_cell:50},{name:fine,min_per_cell:3,max_per_cell:20}]",
            "trainer.fast_dev_run=true",
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={tmp_path}",
        ]
    )
    record = run(cfg)
    assert record["status"] == "completed" and cfg.task.prediction == "hierarchy"
    partitions = read_partitions(tmp_path / "cells.csv")
    assert [p.name for p in partitions] == ["coarse", "middle", "fine"]
    assert len(partitions[0]) < len(partitions[1]) < len(partitions[2])
    backbone = MobileNetV1(alpha=0.25, num_classes=0)
    head_params = sum((backbone.num_features + 1) * len(p) for p in partitions)
    assert record["params"] == sum(p.numel() for p in backbone.parameters()) + head_params


def test_real_data_experiment_requires_the_root(tmp_path):
    cfg = compose_config(["experiment=geolocalization_mp16", "trainer=cpu", f"paths.output_dir={tmp_path}"])
    assert (cfg.task.name, cfg.input_size, len(cfg.data.partitions)) == ("geolocalization", 224, 3)
    with pytest.raises(InstantiationException, match=r"data\.root is required.*mp16_places365\.csv"):
        run(cfg)
