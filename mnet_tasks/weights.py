"""Pretrained weights for :class:`MobileNetV1`: timm models, local weight files and this project's checkpoints.

Every file is read with ``weights_only=True`` (or as safetensors), so a weight file can never run code.
"""

from __future__ import annotations

import functools
import json
import logging
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnet_tasks.data.transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"
# Without pretrained weights (or with a file that records none), images are normalised by ImageNet's statistics.
IMAGENET_NORMALIZE = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
# timm's mobilenetv1_* (an EfficientNet-family model) names layers by stage and block. One table, read both ways
# (timm -> ours to load timm's weights, ours -> timm to export a model under timm's own architecture name):
#   conv_stem / bn1                      <-> stem.conv / stem.bn
#   blocks.S.B.conv_dw / bn1             <-> blocks.i.dw.conv / .bn    (i = position of (S, B) in order)
#   blocks.S.B.conv_pw / bn2             <-> blocks.i.pw.conv / .bn
#   classifier                           <-> classifier
_TIMM_TOP = {"conv_stem": "stem.conv", "bn1": "stem.bn", "classifier": "classifier"}
_TIMM_BLOCK_PART = {"conv_dw": "dw.conv", "bn1": "dw.bn", "conv_pw": "pw.conv", "bn2": "pw.bn"}
_TIMM_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(\d+)\.(conv_dw|bn1|conv_pw|bn2)\.(\w+)$")


def is_timm_mobilenetv1_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    return "conv_stem.weight" in state_dict and any(k.endswith("conv_dw.weight") for k in state_dict)


def timm_module_names(positions: Sequence[tuple[int, int]]) -> dict[str, str]:
    """timm's module names to :class:`MobileNetV1`'s, for a network whose blocks sit at timm's ``(stage, block)``
    ``positions``, in order."""
    names = dict(_TIMM_TOP)
    for index, (stage, block) in enumerate(positions):
        names.update(
            {f"blocks.{stage}.{block}.{part}": f"blocks.{index}.{ours}" for part, ours in _TIMM_BLOCK_PART.items()}
        )
    return names


def rename_modules(state_dict: dict[str, torch.Tensor], names: dict[str, str], error: str) -> dict[str, torch.Tensor]:
    """``state_dict`` with each key's module renamed by ``names`` (tensors are shared); ``error`` ends the message
    for a key with no counterpart."""
    renamed = {}
    for key, value in state_dict.items():
        module, leaf = key.rsplit(".", 1)
        if module not in names:
            raise KeyError(f"state_dict key {key!r} has no counterpart {error}")
        renamed[f"{names[module]}.{leaf}"] = value
    return renamed


def convert_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ``mobilenetv1_*`` state_dict to :class:`MobileNetV1`'s names (tensors are shared)."""
    positions = sorted({tuple(map(int, m.group(1, 2))) for k in state_dict if (m := _TIMM_BLOCK_KEY.match(k))})
    return rename_modules(state_dict, timm_module_names(positions), "in MobileNetV1 (not a timm mobilenetv1_*?)")


def timm_named_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A separable :class:`MobileNetV1`'s state_dict in timm's ``mobilenetv1_*`` names (the inverse of
    :func:`convert_timm_state_dict`): timm's stages end where the model's ``feature_info`` stages do."""
    positions: list[tuple[int, int]] = []
    for stage, end in enumerate(model.stage_ends):
        positions += [(stage, block) for block in range(end + 1 - len(positions))]
    ours_to_timm = {ours: theirs for theirs, ours in timm_module_names(positions).items()}
    return rename_modules(model.state_dict(), ours_to_timm, "in timm's mobilenetv1_* (separable blocks only)")


# What torch.load raises for a file its weights-only unpickler refuses (or cannot parse).
UNSAFE_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError)


def refusal_reason(error: Exception) -> str:
    """Why torch refused a file (one clause, no final stop), without the advice it wraps the reason in: re-running
    with ``weights_only=False`` or allow-listing the global is exactly what a crafted file needs to run its code."""
    reasons = []
    for line in str(error).splitlines():
        line = line.split("WeightsUnpickler error:")[-1].split(" Please use ", 1)[0].strip()
        if line and not any(advice in line for advice in ("weights_only", "Weights only", "Check the documentation")):
            reasons.append(line)
    return " ".join(reasons).rstrip(".") or type(error).__name__


def load_safely(path: Path) -> Any:
    """A torch file's payload, read with ``weights_only=True``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except UNSAFE_LOAD_ERRORS as error:
        raise ValueError(f"{path} cannot be loaded safely (weights_only=True): {refusal_reason(error)}") from error


def existing_file(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    return path


def read_weight_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat state_dict from a .safetensors, .pth/.pt or Lightning .ckpt file, safely loaded."""
    path = existing_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    payload = load_safely(path)
    for nested in ("state_dict", "model", "state_dict_ema"):
        if isinstance(payload, dict) and isinstance(payload.get(nested), dict):
            payload = payload[nested]
            break
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(f"{path} holds no state_dict of tensors")
    return payload


def backbone_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MobileNetV1 keys of any supported source: a task checkpoint (``backbone.*``), timm, or plain."""
    if any(k.startswith("backbone.") for k in state_dict):
        state_dict = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
    if is_timm_mobilenetv1_state_dict(state_dict):
        state_dict = convert_timm_state_dict(state_dict)
    return state_dict


def timm_state_dict(model_name: str) -> dict[str, torch.Tensor]:
    """Weights of a timm model by name (e.g. ``mobilenetv1_100.ra4_e3600_r224_in1k``); downloads if not cached."""
    import timm

    return timm.create_model(model_name, pretrained=True).state_dict()


def load_pretrained(model: nn.Module, source: str | Path) -> None:
    """Load ``source`` (``timm:<model name>`` or a weight/checkpoint file) into a MobileNetV1.

    The classifier is kept only where its shape matches (a new task gets a fresh head); the pruned parts of a
    features-only model are skipped. Any other missing or mis-shaped tensor is an error, not a partial load.
    """
    source = str(source)
    if source.startswith(TIMM_PREFIX):
        raw = timm_state_dict(source.removeprefix(TIMM_PREFIX))
    else:
        raw = read_weight_file(source)
    incoming = backbone_state_dict(raw)
    own = model.state_dict()
    mismatched = [k for k in own if k in incoming and incoming[k].shape != own[k].shape]
    head_reset = [k for k in mismatched if k.startswith("classifier.")]
    body_mismatch = [k for k in mismatched if k not in head_reset]
    missing = [k for k in own if k not in incoming and not k.startswith("classifier.")]
    if body_mismatch or missing:
        details = [f"{k}: {tuple(incoming[k].shape)} vs {tuple(own[k].shape)}" for k in body_mismatch[:5]]
        raise ValueError(
            f"pretrained weights {source} do not fit this backbone (different alpha or architecture?): "
            f"{len(body_mismatch)} mis-shaped {details}, {len(missing)} missing {missing[:5]}"
        )
    if head_reset:
        log.info("pretrained %s: classifier not loaded (shape differs), it starts fresh", source)
    model.load_state_dict({k: v for k, v in incoming.items() if k in own and k not in head_reset}, strict=False)
    log.info("loaded pretrained weights from %s", source)


@functools.lru_cache(maxsize=32)
def pretrained_normalize(source: str | None) -> dict[str, list[float]]:
    """The ``mean`` and ``std`` the weights ``source`` (as ``backbone.pretrained`` takes it) were trained with.

    timm weights bring their ``pretrained_cfg`` (read from timm's tables, nothing is downloaded); a checkpoint of
    this project (``.ckpt``) or its exported ``.safetensors`` brings what its run recorded. Without weights, or for
    a file that records nothing (a plain ``.pth``), ImageNet's statistics.
    """
    if not source:
        return IMAGENET_NORMALIZE
    if source.startswith(TIMM_PREFIX):
        import timm

        name = source.removeprefix(TIMM_PREFIX)
        config = timm.models.get_pretrained_cfg(name)
        if config is None:
            raise ValueError(f"timm has no pretrained config named {name!r}")
        return {"mean": list(config.mean), "std": list(config.std)}
    path = existing_file(source)
    recorded = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        from mnet_tasks.model_card import CARD_KEY

        with safe_open(str(path), "pt") as file:
            card = (file.metadata() or {}).get(CARD_KEY)
        recorded = json.loads(card) if card else None
    else:
        payload = load_safely(path)
        if isinstance(payload, dict):
            recorded = (payload.get("hyper_parameters") or {}).get("normalize")
    if not recorded:
        log.info("%s records no input normalisation; ImageNet's mean and std are assumed", path)
        return IMAGENET_NORMALIZE
    return {"mean": [float(v) for v in recorded["mean"]], "std": [float(v) for v in recorded["std"]]}
