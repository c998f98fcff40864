"""Configuration mistakes fail before any data is generated or read, with a message that names the key."""

from __future__ import annotations

import json
import re

import pytest
import torch
from hydra.errors import HydraException

from mnet_tasks.config import compose_config
from mnet_tasks.run import run, validate_config
from mnet_tasks.task_module import build_task


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.batch_size=-8"], "data.batch_size must be an integer >= 1, got -8"),
        (["data.batch_size=8.5"], "data.batch_size must be an integer >= 1, got 8.5"),
        (["data.num_workers=-1"], "data.num_workers must be an integer >= 0, got -1"),
        (["trainer.max_epochs=1.5"], "trainer.max_epochs must be an integer >= -1, got 1.5"),
        (["trainer.max_epochs=ten"], "trainer.max_epochs must be an integer >= -1, got 'ten'"),
        (["backbone.alpha=half"], "backbone.alpha (width multiplier) must be a number > 0, got 'half'"),
        (["task.optimizer.lr=fast"], "task.optimizer.lr must be a number > 0, got 'fast'"),
        (
            ["task._target_=mnet_tasks.tasks.nowhere.Task"],
            "task._target_=mnet_tasks.tasks.nowhere.Task is not a registered task class",
        ),
        (["task._target_=collections.OrderedDict"], "task._target_=collections.OrderedDict is not a registered"),
        (["task=detection", "task.detector.name=yolo"], "task.detector.name must be one of ['faster_rcnn', 'ssd']"),
        (["task=detection", "+task.detector.nms_tresh=0.5"], "task.detector.nms_tresh is not an option of ssd"),
        (["data.max_skipped_files=-1"], "data.max_skipped_files must be an integer >= 0 or null"),
        (
            ["task=attributes", "data.include_unlabeled=true"],
            "unlabeled images, which need a teacher: set task.teacher.checkpoint",
        ),
        (["task.nonfinite_loss=ignore"], "task.nonfinite_loss must be stop or skip, got 'ignore'"),
    ],
)
def test_wrong_values_fail_naming_the_key_before_any_data(tmp_path, overrides, message) -> None:
    cfg = compose_config(
        [*overrides, "callbacks=none", f"paths.data_dir={tmp_path}/data", f"paths.output_dir={tmp_path}/run"]
    )
    with pytest.raises(Exception, match=re.escape(message)):  # ConfigError, or Hydra wrapping a DataModule's
        run(cfg)
    assert not (tmp_path / "data").exists()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"


@pytest.mark.parametrize(("group", "name"), [("task", "segmentation"), ("backbone", "resnet50")])
def test_unknown_task_or_backbone_names_the_group_and_the_choices(group, name) -> None:
    with pytest.raises(HydraException, match=rf"Could not find '{group}/{name}'[\s\S]*Available options in '{group}'"):
        compose_config([f"{group}={name}"])


def test_ssd_builds_at_the_smallest_input_its_extra_layers_stop_at_one_pixel() -> None:
    """No input that MobileNetV1 accepts is too small for SSD: the extra layers' padded stride-2 convolutions keep
    a 1x1 map at 1x1 (this test fails if that changes, and a check_config limit is then needed)."""
    cfg = compose_config(["task=detection", "backbone.resolution=32"])
    validate_config(cfg)
    module = build_task(cfg, num_classes=2, category_ids=[1, 2], category_names=["a", "b"]).eval()
    with torch.no_grad():
        maps = module.detector.backbone(torch.rand(1, 3, 32, 32))
        detections = module([torch.rand(3, 32, 32)])
    assert [tuple(m.shape[-2:]) for m in maps.values()] == [(2, 2), (1, 1), (1, 1), (1, 1), (1, 1), (1, 1)]
    assert detections[0]["boxes"].shape[1] == 4
