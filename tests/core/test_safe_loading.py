"""Safe loading: a checkpoint is data. Pickled code and saved configs naming untrusted targets are refused."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from mnet_tasks import MobileNetV1, load_pretrained
from mnet_tasks.checkpoints import check_targets
from mnet_tasks.config import ConfigError, compose_config
from mnet_tasks.registry import CHECKPOINT_KEY
from mnet_tasks.run import validate_config
from mnet_tasks.task_module import build_task
from mnet_tasks.tasks.attributes.module import TeacherOptions, load_teacher
from mnet_tasks.trained import load_trained

REPO = Path(__file__).resolve().parents[2]
ATTACK = {"_target_": "os.system", "command": "touch /tmp/mnet_tasks_was_attacked"}


class RunsCodeWhenUnpickled:
    def __reduce__(self) -> tuple:
        return os.system, ("touch /tmp/mnet_tasks_was_attacked",)


@pytest.fixture
def system_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every os.system call made during the test (none may be)."""
    calls: list[str] = []
    monkeypatch.setattr(os, "system", calls.append)
    return calls


def crafted_checkpoint(tmp_path: Path, **hparams_changes) -> Path:
    """A real classification checkpoint's contents, with ``hparams_changes`` in its hyper-parameters."""
    module = build_task(compose_config(["backbone.resolution=64"]), num_classes=3)
    payload = {
        "state_dict": module.state_dict(),
        "hyper_parameters": {**dict(module.hparams), **hparams_changes},
        CHECKPOINT_KEY: {"task_class": "classification"},
    }
    path = tmp_path / "crafted.ckpt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"optimizer": ATTACK}, "hyper_parameters.optimizer._target_=os.system"),
        (
            {"finetune": {"schedule": [{"step": 1}, {"hook": ATTACK}]}},
            "hyper_parameters.finetune.schedule[1].hook._target_",
        ),
    ],
    ids=["optimizer", "nested"],
)
def test_checkpoint_config_naming_os_system_is_refused(tmp_path, system_calls, changes, key) -> None:
    path = crafted_checkpoint(tmp_path, **changes)

    with pytest.raises(ConfigError, match=re.escape(f"{path}: {key}")):
        load_trained(path, crop_pct=0.875)  # what export and predict rebuild a checkpoint with
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate_config(compose_config([f"ckpt_path={path}"]))  # resume or evaluate: before any data is touched
    assert system_calls == []


def test_task_module_refuses_an_optimizer_target_outside_the_trusted_packages(system_calls) -> None:
    module = build_task(compose_config(["backbone.resolution=64"]), num_classes=3)
    module.hparams.optimizer = ATTACK  # as a module rebuilt from a crafted checkpoint's hyper-parameters would hold
    with pytest.raises(ConfigError, match=r"optimizer\._target_=os\.system is outside the packages"):
        module.configure_optimizers()
    assert system_calls == []


def test_trusted_targets_pass() -> None:
    cfg = compose_config(["task=detection"])
    check_targets(cfg, "config")  # every group's _target_: mnet_tasks, torch, timm, pytorch_lightning
    check_targets({"optimizer": {"_target_": "torch.optim.SGD"}, "items": [{"_target_": "torchvision.ops.nms"}]}, "x")


def test_pickled_code_in_a_checkpoint_is_refused_naming_the_file(tmp_path, system_calls) -> None:
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"payload": RunsCodeWhenUnpickled()}}, path)

    with pytest.raises(ConfigError, match=re.escape(f"checkpoint={path} cannot be loaded safely (weights_only=True)")):
        load_trained(path, crop_pct=0.875)
    with pytest.raises(ConfigError, match=re.escape(f"ckpt_path={path} cannot be loaded safely")):
        validate_config(compose_config([f"ckpt_path={path}"]))
    assert system_calls == []


class NotAllowlisted:
    """A class of this module: torch's weights-only unpickler refuses every global it does not know."""


class TouchesWhenUnpickled:
    """Unpickled, it runs ``touch <marker>`` through the real os.system: the marker would show the payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


# Every way a user hands the project a file that torch.load reads.
LOADERS = {
    "checkpoint": lambda path: load_trained(path, crop_pct=0.875),
    "ckpt_path": lambda path: validate_config(compose_config([f"ckpt_path={path}"])),
    "pretrained": lambda path: load_pretrained(MobileNetV1(alpha=0.25), path),
    "teacher": lambda path: load_teacher(TeacherOptions(checkpoint=str(path)), ["Smiling"]),
}


@pytest.mark.parametrize("payload", ["os.system", "class"])
@pytest.mark.parametrize("loader", LOADERS)
def test_a_refused_pickle_is_named_with_torchs_reason_and_without_its_advice(tmp_path, loader, payload) -> None:
    marker = tmp_path / "payload_ran"
    if payload == "os.system":
        obj, reason = TouchesWhenUnpickled(marker), f"GLOBAL {os.system.__module__}.system"
    else:
        obj, reason = NotAllowlisted(), f"Unsupported global: GLOBAL {__name__}.NotAllowlisted"
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"payload": obj}}, path)

    with pytest.raises(ValueError) as error:  # ConfigError for the checkpoints, a ValueError for weight files
        LOADERS[loader](path)
    message = str(error.value)
    assert f"{path} cannot be loaded safely (weights_only=True): " in message and reason in message
    for advice in ("False", "safe_globals", "Check the documentation", "Weights only load failed"):
        assert advice not in message  # torch's ways round the refusal are what a crafted file wants
    assert not marker.exists()


def test_every_torch_load_is_weights_only() -> None:
    calls = []
    for path in [*REPO.glob("mnet_tasks/**/*.py"), *REPO.glob("tests/*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if "torch.load(" in line and "weights_only=True" not in line:
                calls.append(f"{path.relative_to(REPO)}:{number}")
    assert calls == []
