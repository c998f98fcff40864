"""What every task module shares: the backbone from config, parameter groups, optimizer and lr schedule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import nn

from mnet_tasks.backbone import MobileNetV1
from mnet_tasks.weights import load_pretrained

# Keys of the backbone group that set the input size rather than the network (see config.resolve_input_size).
INPUT_SIZE_KEYS = ("rho", "resolution")


def build_backbone(backbone: Mapping[str, Any], **overrides: Any) -> MobileNetV1:
    """A MobileNetV1 from the ``backbone`` config group, with its pretrained weights if it names any."""
    kwargs = {k: v for k, v in backbone.items() if k not in INPUT_SIZE_KEYS and k != "pretrained"}
    model = MobileNetV1(**kwargs, **overrides)
    if backbone.get("pretrained"):
        load_pretrained(model, backbone["pretrained"])
    return model


def is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only: not on depthwise filters (the paper), BN or biases."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            decays = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear)) and not is_depthwise(module)
            (decay if decays else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_multiplier(
    step: int,
    steps_per_epoch: float,
    total_steps: int,
    name: str = "cosine",
    warmup_epochs: float = 0.0,
    decay_rate: float = 0.94,
    decay_epochs: float = 2.5,
) -> float:
    """Learning-rate factor at an optimizer step: linear warmup, then cosine, staircase exponential or constant."""
    warmup_steps = warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "cosine":
        progress = (step - warmup_steps) / max(1.0, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if name == "exponential":
        return decay_rate ** math.floor(step / (decay_epochs * steps_per_epoch))
    if name == "constant":
        return 1.0
    raise ValueError(f"task.lr_schedule.name must be cosine, exponential or constant, got {name!r}")


class TaskModule(pl.LightningModule):
    """Base of every task: subclasses build their network in ``__init__`` and define the steps.

    Args:
        backbone: the ``backbone`` config group.
        optimizer: a ``_target_`` config of a torch optimizer, built over :func:`parameter_groups`.
        lr_schedule: arguments of :func:`lr_multiplier`, applied every optimizer step.
        weight_decay: decay of the conv and linear weights (depthwise filters excluded).
        monitor / monitor_mode: the primary metric and whether higher is better.
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        lr_schedule: Mapping[str, Any],
        weight_decay: float,
        monitor: str,
        monitor_mode: str,
        name: str,
        native_resolution: int,
    ):
        super().__init__()
        # Every __init__ argument of the subclass chain; plain containers keep checkpoints weights_only-loadable.
        self.save_hyperparameters()

    def configure_optimizers(self) -> dict[str, Any]:
        make_optimizer = instantiate(self.hparams.optimizer, _partial_=True)
        optimizer = make_optimizer(parameter_groups(self, self.hparams.weight_decay))
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        steps_per_epoch = total_steps / max_epochs
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_multiplier(step, steps_per_epoch, total_steps, **self.hparams.lr_schedule),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
