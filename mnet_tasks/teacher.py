"""Distillation teachers, shared by every task that learns from one: where a teacher comes from
(:class:`TeacherSource`, a task's ``task.teacher``) and the frozen network that runs on the student's batches
(:class:`Teacher`), from a checkpoint of the task (:func:`checkpoint_teacher`) or a timm model and its weight file
(:func:`timm_teacher`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnet_tasks.checkpoints import load_checkpoint
from mnet_tasks.config import resolve_input_size
from mnet_tasks.task_module import build_backbone, options_from_config
from mnet_tasks.weights import IMAGENET_NORMALIZE, backbone_state_dict, read_weight_file


@dataclass(frozen=True)
class TeacherSource:
    """``task.teacher``: a checkpoint of the task, or a timm model with its weight file.

    Attributes:
        checkpoint: a checkpoint of this project's task of the same kind (any α, ρ or backbone ablation).
        timm: or a timm model name, built with the task's number of outputs, with its ``weights`` file.
        weights: the timm model's weights (.safetensors, .pth or .ckpt), read weights-only.
        input_size: the teacher's input size; by default the checkpoint's own (native size × ρ, or its
            resolution), or the timm model's default.
    """

    checkpoint: str | None = None
    timm: str | None = None
    weights: str | None = None
    input_size: int | None = None

    @classmethod
    def from_config(cls, options: Mapping[str, Any] | None) -> Any:
        """The options of ``task.teacher`` (a subclass adds its own), checked; errors name the key."""
        teacher = cls(**options_from_config(cls, options, "task.teacher"))
        if teacher.checkpoint and teacher.timm:
            raise ValueError("task.teacher: give either checkpoint or timm (with weights), not both")
        if teacher.timm and not teacher.weights:
            raise ValueError(f"task.teacher.timm={teacher.timm} needs task.teacher.weights: a file of its weights")
        if teacher.weights and not teacher.timm:
            raise ValueError("task.teacher.weights is for a timm model: set task.teacher.timm to its model name")
        return teacher

    @property
    def enabled(self) -> bool:
        return bool(self.checkpoint or self.timm)


@dataclass
class Teacher:
    """A frozen network (eval mode, no gradients) and the input size and normalisation it expects.

    It is deliberately not an ``nn.Module`` attribute of the student: it stays out of the student's checkpoint,
    parameter count, optimizer and ``train()`` calls.
    """

    network: nn.Module
    input_size: int
    digest: str  # of the weight file: keys caches of its outputs
    normalize: Mapping[str, Sequence[float]]  # the mean and std the teacher was trained with

    def __post_init__(self) -> None:
        self.network.eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, normalize: Mapping[str, Sequence[float]]) -> torch.Tensor:
        """Outputs for a batch of images normalised by ``normalize`` (the student's), brought to the teacher's own
        normalisation and resized to its input size where they differ."""
        if normalize != self.normalize:
            given, own = (
                {k: images.new_tensor(n[k]).view(1, -1, 1, 1) for k in n} for n in (normalize, self.normalize)
            )
            images = (images * given["std"] + given["mean"] - own["mean"]) / own["std"]
        if images.shape[-2:] != (self.input_size, self.input_size):
            size = (self.input_size, self.input_size)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.network(images).float()


def file_digest(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def timm_teacher(source: TeacherSource, num_outputs: int, what: str) -> Teacher:
    """The timm model ``source`` names with ``num_outputs`` outputs (``what`` they are, for errors) and its
    weight file; its input size and normalisation from its ``pretrained_cfg`` unless ``input_size`` is given."""
    import timm

    path = Path(source.weights).expanduser()
    try:
        network = timm.create_model(source.timm, pretrained=False, num_classes=num_outputs)
    except RuntimeError as error:
        raise ValueError(f"task.teacher.timm={source.timm} cannot be built: {error}") from error
    try:
        network.load_state_dict(read_weight_file(path))
    except RuntimeError as error:
        raise ValueError(
            f"task.teacher.weights={path} does not fit timm model {source.timm} with {num_outputs} {what}: {error}"
        ) from error
    config = network.pretrained_cfg
    input_size = source.input_size or config.get("input_size", (3, 224, 224))[-1]
    normalize = {key: list(config.get(key, IMAGENET_NORMALIZE[key])) for key in ("mean", "std")}
    return Teacher(network, input_size, file_digest(path), normalize)


def checkpoint_teacher(
    source: TeacherSource,
    num_outputs: int,
    check: Callable[[Path, Mapping[str, Any]], None],
    after: Mapping[str, nn.Module] | None = None,
) -> Teacher:
    """The MobileNetV1 of a checkpoint of the task, rebuilt from its hyper-parameters with ``num_outputs`` outputs
    and read weights-only; ``check(path, hyper_parameters)`` raises, naming the key, when the checkpoint is not of
    the task or does not fit the student. ``after``: the task's modules that run on the backbone's output, by their
    attribute name in the task module (e.g. an embedding's normalisation), loaded from the checkpoint too. Its input
    size is its own (native size × ρ, or its resolution) unless ``source.input_size`` is given, its normalisation
    what it recorded."""
    path = Path(source.checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"task.teacher.checkpoint: no file at {path}")
    payload = load_checkpoint(path, "task.teacher.checkpoint")
    weights_and_hparams = isinstance(payload, dict) and "state_dict" in payload
    hparams = payload.get("hyper_parameters", {}) if weights_and_hparams else {}
    check(path, hparams)
    backbone = {**hparams["backbone"], "pretrained": None}  # its weights are in the checkpoint itself
    network = build_backbone(backbone, num_classes=num_outputs)
    state = payload["state_dict"]
    network.load_state_dict(backbone_state_dict(state))
    for name, module in (after or {}).items():
        module.load_state_dict({k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(f"{name}.")})
    if after:
        network = nn.Sequential(network, *after.values())
    size = source.input_size or resolve_input_size(
        hparams["native_resolution"], backbone.get("rho", 1.0), backbone.get("resolution")
    )
    normalize = {key: list(values) for key, values in (hparams.get("normalize") or IMAGENET_NORMALIZE).items()}
    return Teacher(network, size, file_digest(path), normalize)
