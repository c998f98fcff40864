"""Configuration mistakes fail before any data is generated or read, with a message that names the key."""

from __future__ import annotations

import json
import re

import pytest
from hydra.errors import HydraException

from mnet_tasks.config import compose_config
from mnet_tasks.run import run


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
        (["task.error_analysis=sometimes"], "task.error_analysis must be true or false, got 'sometimes'"),
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
