"""The error-analysis writer every task shares: files in analysis/, TensorBoard, the running top-K, the switch."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from mnet_tasks.analysis import (
    TopK,
    captioned,
    denormalize,
    label_names,
    save_analysis,
    tile,
)
from mnet_tasks.config import ConfigError, compose_config
from mnet_tasks.data.transforms import normalize_images
from mnet_tasks.task_module import build_task
from mnet_tasks.weights import IMAGENET_NORMALIZE


def fake_module(run_dir: Path, loggers: list | None = None, datamodule=None) -> SimpleNamespace:
    """What the writer reads of a task module: its trainer's run folder and DataModule, loggers, global step."""
    trainer = SimpleNamespace(default_root_dir=str(run_dir), datamodule=datamodule)
    return SimpleNamespace(trainer=trainer, loggers=loggers or [], global_step=7, error_analysis=True)


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as file:
        return list(csv.reader(file))


def small_figure() -> Figure:
    figure = Figure(figsize=(2, 1.5), dpi=50)
    figure.add_subplot().plot([0, 1], [1, 0])
    return figure


def test_pictures_and_tables_land_in_analysis_and_replace_the_last_epochs(tmp_path):
    module = fake_module(tmp_path)
    rows = [{"name": "a", "value": 0.1 + 0.2, "count": 3}, {"name": "b", "value": float("nan"), "count": 0}]
    sheet = Image.new("RGB", (30, 20), (200, 0, 0))
    folder = save_analysis(module, {"curve": small_figure(), "sheet": sheet}, {"values": rows, "empty": []})
    assert folder == tmp_path / "analysis"
    assert sorted(p.name for p in folder.iterdir()) == ["curve.png", "sheet.png", "values.csv"]  # no empty table
    assert Image.open(folder / "curve.png").size == (100, 75)  # the figure at its own size and dpi
    assert Image.open(folder / "sheet.png").getpixel((0, 0)) == (200, 0, 0)
    table = read_csv(folder / "values.csv")
    assert table[0] == ["name", "value", "count"]
    assert float(table[1][1]) == 0.1 + 0.2 and table[2][1] == "nan"  # floats in full, round-tripping exactly

    save_analysis(module, {"sheet": sheet})  # the next epoch has no curve and no table
    assert sorted(p.name for p in folder.iterdir()) == ["sheet.png"]


def test_analysis_names_and_columns_are_checked(tmp_path):
    module = fake_module(tmp_path)
    with pytest.raises(ValueError, match=r"plain file name .*'\.\./up'"):
        save_analysis(module, tables={"../up": [{"a": 1}]})
    with pytest.raises(ValueError, match=r"ragged\.csv: a row has the columns \['b'\], the first one \['a'\]"):
        save_analysis(module, tables={"ragged": [{"a": 1}, {"b": 2}]})


def test_pictures_go_to_tensorboard(tmp_path):  # tensorboard: in the test extra
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    save_analysis(fake_module(tmp_path, [logger]), {"sheet": Image.new("RGB", (30, 20), (0, 90, 0))})
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    (image,) = events.Images("analysis/sheet")
    assert (image.step, image.width, image.height) == (7, 30, 20)


def test_top_k_keeps_the_highest_scores_first_offered_on_ties():
    scores = np.random.default_rng(0).random(200).round(2)  # many ties
    top = TopK(16)
    for index, score in enumerate(scores):
        top.offer(float(score), index)
    kept = top.items()
    expected = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:16]  # ties: the earlier index first
    assert [index for _, index in kept] == expected
    assert [score for score, _ in kept] == sorted(scores, reverse=True)[:16]
    assert not top.admits(kept[-1][0]) and top.admits(kept[-1][0] + 0.001)
    assert top.gathered() == kept  # one process: the same
    with pytest.raises(ValueError, match="at least one"):
        TopK(0)


def test_denormalize_gives_back_the_pixels_the_network_saw():
    pixels = torch.randint(0, 256, (2, 3, 9, 7), dtype=torch.uint8)
    normalized = normalize_images(pixels, **IMAGENET_NORMALIZE, memory_format=torch.channels_last)
    assert torch.equal(denormalize(normalized, **IMAGENET_NORMALIZE), pixels)


def test_label_names_come_from_the_datamodule_when_it_has_them(tmp_path):
    assert label_names(fake_module(tmp_path, datamodule=SimpleNamespace(class_names=["cat", "dog"])), 2) == [
        "cat",
        "dog",
    ]
    assert label_names(fake_module(tmp_path, datamodule=SimpleNamespace(class_names=["cat"])), 2) == ["0", "1"]
    assert label_names(fake_module(tmp_path, datamodule=object()), 3) == ["0", "1", "2"]


def test_captions_enlarge_small_pictures_and_wrap_long_text():
    picture = Image.new("RGB", (48, 40), (0, 0, 255))
    short = captioned(picture, "cat → dog (0.93)")
    assert short.width == 192 and short.getpixel((191, 159)) == (0, 0, 255)  # 4x, pixels kept sharp
    long = captioned(picture, " ".join(["a_rather_long_class_name"] * 6))
    assert long.width == 192 and long.height > short.height  # wrapped onto more lines, no wider
    sheet = tile([short, long, short], columns=2)
    assert sheet.size == (384, long.height + short.height)


def test_build_task_applies_the_switch_which_a_task_need_not_accept(tmp_path):
    base = ["backbone.alpha=0.25"]
    assert build_task(compose_config(base), num_classes=3).error_analysis is True  # the default
    assert build_task(compose_config([*base, "task.error_analysis=false"]), num_classes=3).error_analysis is False
    with pytest.raises(ConfigError, match=r"task\.error_analysis must be true or false, got 'sometimes'"):
        build_task(compose_config([*base, "task.error_analysis=sometimes"]), num_classes=3)
