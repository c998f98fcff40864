"""Checkpoints and saved configs read safely: tensors and plain values only (``weights_only=True``), and no
``_target_`` outside the trusted packages, so that loading a file never runs code from it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from mnet_tasks.config import ConfigError
from mnet_tasks.registry import CHECKPOINT_KEY, trusted_packages
from mnet_tasks.weights import UNSAFE_LOAD_ERRORS, refusal_reason

# The packages whose classes and functions a saved config (a checkpoint's hyper-parameters) may name as ``_target_``,
# besides those of the installed task packages (the registry): building anything else could run arbitrary code.
TRUSTED_TARGET_PACKAGES = (
    "mnet_tasks",
    "torch",
    "torchvision",
    "timm",
    "pytorch_lightning",
    "lightning",
    "torchmetrics",
)


def check_targets(config: Any, source: str | Path, path: str = "") -> None:
    """Refuse, naming ``source`` and the key, any ``_target_`` in ``config`` (nested mappings and lists) outside
    ``TRUSTED_TARGET_PACKAGES`` and the registered task packages: a saved config is data, and a ``_target_`` such
    as ``os.system`` would make instantiating it run code."""
    if isinstance(config, (DictConfig, ListConfig)):
        config = OmegaConf.to_container(config, resolve=False)  # the targets as written, unresolved
    if isinstance(config, Mapping):
        target = config.get("_target_")
        if target is not None:
            package = str(target).split(".", 1)[0]
            if package not in (*TRUSTED_TARGET_PACKAGES, *trusted_packages()):
                key = f"{path}._target_" if path else "_target_"
                raise ConfigError(
                    f"{source}: {key}={target} is outside the packages a saved config may name "
                    f"({', '.join(TRUSTED_TARGET_PACKAGES)} and installed mnet_tasks plug-ins); refusing to build it"
                )
        for key, value in config.items():
            check_targets(value, source, f"{path}.{key}" if path else str(key))
    elif isinstance(config, Sequence) and not isinstance(config, (str, bytes)):
        for index, value in enumerate(config):
            check_targets(value, source, f"{path}[{index}]")


def load_checkpoint(path: str | Path, key: str) -> Any:
    """A checkpoint's payload; refused, naming the file and the config ``key``, if it cannot be read with
    ``weights_only=True`` (it holds pickled objects, which could run code) or its saved hyper-parameters name an
    untrusted target. A missing file is left to the caller (None), which says what it expected there."""
    path = Path(path).expanduser()
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except UNSAFE_LOAD_ERRORS as error:
        raise ConfigError(
            f"{key}={path} cannot be loaded safely (weights_only=True): {refusal_reason(error)}. A checkpoint of "
            "this project holds only tensors and plain values; do not load this file unless you trust where it came "
            "from"
        ) from error
    if isinstance(payload, Mapping):
        check_targets(payload.get("hyper_parameters", {}), path, "hyper_parameters")
    return payload


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """The saved hyper-parameters, state_dict and registered task name of a Lightning checkpoint of this
    project, read with ``weights_only=True`` and refused if its hyper-parameters name an untrusted target."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    payload = load_checkpoint(path, "checkpoint")
    if not isinstance(payload, dict) or not {"state_dict", "hyper_parameters"} <= payload.keys():
        raise ValueError(f"{path} is not a checkpoint of this project (no state_dict and hyper_parameters)")
    task = (payload.get(CHECKPOINT_KEY) or {}).get("task_class")
    if not task:
        raise ValueError(f"{path} does not name its task class (a checkpoint saved outside a registered task)")
    return dict(payload["hyper_parameters"]), payload["state_dict"], task
