"""A trained model made ready for inference, shared by export, predict, int8 quantization and the leaderboard.

A checkpoint is rebuilt into the task class it records (looked up in the task registry, never from a
``_target_`` it names) from its own saved hyper-parameters, read with ``weights_only=True``; its
:class:`~mnet_tasks.adapter.TaskAdapter` says how the network is exported and read.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mnet_tasks.adapter import TaskAdapter, adapter_of
from mnet_tasks.backbone import ConvBnAct
from mnet_tasks.checkpoints import read_checkpoint
from mnet_tasks.config import ConfigError, compose_config, resolve_input_size
from mnet_tasks.model_card import ModelCard
from mnet_tasks.registry import RegistryError, task_class
from mnet_tasks.task_module import TaskModule


@dataclass
class TrainedModel:
    """A task module as trained (eval mode, the checkpoint's weights), its adapter and card."""

    module: TaskModule
    adapter: TaskAdapter
    card: ModelCard
    hparams: dict[str, Any]

    def network(self) -> nn.Module:
        """A copy ready to run and to export, with flat outputs in the card's order and BN folded into the
        convolutions."""
        network = fold_batchnorm(self.adapter.network(copy.deepcopy(self.module)))
        return self.adapter.inference_network(network, self.card).eval()

    def reference(self) -> nn.Module:
        """The task module's own forward as trained (BN unfolded): what every export is checked against."""
        return self.adapter.inference_network(self.adapter.network(self.module), self.card).eval()


def validation_crop(cfg: DictConfig) -> float:
    """The data's validation ``crop_pct`` (1: none, for data without one, e.g. detection's)."""
    return float(cfg.data.get("crop_pct", 1.0))


def load_trained(path: str | Path, crop_pct: float) -> TrainedModel:
    """Rebuild a checkpoint's task module from its hyper-parameters; ``crop_pct`` is its data's validation crop."""
    hparams, state_dict, task = read_checkpoint(path)
    try:
        cls = task_class(task)
    except RegistryError as error:
        raise ValueError(f"{path}: {error}") from error
    adapter = adapter_of(cls)
    try:
        module = cls(**adapter.rebuild_kwargs(cls, hparams))
        module.load_state_dict(state_dict)
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        raise ValueError(f"{path}: the {task} task cannot be rebuilt from its checkpoint ({error})") from error
    backbone = hparams["backbone"]
    heads = adapter.heads(hparams)
    card = ModelCard(
        task=hparams.get("name", task),
        family=task,
        alpha=float(backbone["alpha"]),
        input_size=resolve_input_size(
            hparams["native_resolution"], backbone.get("rho", 1.0), backbone.get("resolution")
        ),
        crop_pct=float(crop_pct),
        heads=heads,
        predict_head=adapter.predict_head(hparams),
        outputs=adapter.output_names(heads),
        activation=adapter.activation,
        preprocess=adapter.preprocess,
        **(hparams.get("normalize") or {}),  # the mean and std it was trained with (ImageNet's if not recorded)
    )
    return TrainedModel(module.eval(), adapter, card, hparams)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every MobileNetV1 layer's BatchNorm into its convolution (in place, eval mode): one op less per layer
    for eager PyTorch, and the same arithmetic ONNX Runtime would do."""
    model.eval()
    for layer in model.modules():
        if isinstance(layer, ConvBnAct) and isinstance(layer.bn, nn.BatchNorm2d):
            layer.conv = fuse_conv_bn_eval(layer.conv, layer.bn)
            layer.bn = nn.Identity()
    return model


def compose_for_checkpoint(config_name: str, overrides: Sequence[str], key: str) -> DictConfig:
    """Compose ``config_name``; when the override of config key ``key`` names a checkpoint, its task config
    (the saved ``task.name``) is chosen before the user's overrides (so that ``data`` is its task's data), unless
    they choose ``task`` themselves."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = {override.key_or_group: override for override in OverridesParser.create().parse_overrides(overrides)}
    if key not in parsed or parsed[key].value() is None:
        raise ConfigError(f"{key} is required: {key}=/path/to/model")
    path = str(parsed[key].value())
    if "task" in parsed or Path(path).suffix != ".ckpt":
        return compose_config(overrides, config_name)
    hparams, _, task = read_checkpoint(path)
    return compose_config([f"task={hparams.get('name', task)}", *overrides], config_name)
