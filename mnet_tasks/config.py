"""Where the configs live, how the input size is resolved, and the checks that run before any data is touched."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from mnet_tasks.backbone import MIN_INPUT_SIZE
from mnet_tasks.registry import trusted_packages
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
# Integer keys users set most, and their least allowed value (trainer.max_epochs=-1: no limit, as in Lightning).
INTEGER_KEYS = {"data.batch_size": 1, "data.num_workers": 0, "trainer.max_epochs": -1, "seed": 0}


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


def config_dir() -> Path:
    """The ``conf/`` folder: inside the installed package, or at the top of a source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"mnet_tasks configs not found next to {package}; reinstall the package")


def resolve_input_size(native: int, rho: float, resolution: int | None) -> int:
    """The one input size every part reads: ``backbone.resolution`` if set, else ``round(native * backbone.rho)``."""
    if resolution is not None:
        if not isinstance(resolution, int) or resolution < MIN_INPUT_SIZE:
            raise ConfigError(f"backbone.resolution must be an integer >= {MIN_INPUT_SIZE}, got {resolution!r}")
        return resolution
    if not isinstance(rho, (int, float)) or isinstance(rho, bool) or rho <= 0:
        raise ConfigError(f"backbone.rho (resolution multiplier) must be a number > 0, got {rho!r}")
    size = round(native * rho)
    if size < MIN_INPUT_SIZE:
        raise ConfigError(
            f"backbone.rho={rho} gives an input of {size}px from the task's native {native}px; "
            f"MobileNetV1 needs at least {MIN_INPUT_SIZE}px"
        )
    return size


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("mnet.input_size"):
        OmegaConf.register_new_resolver("mnet.input_size", resolve_input_size)


def validate_config(cfg: DictConfig) -> None:
    """Fail fast, naming the key, before data is generated or read."""
    alpha = cfg.backbone.alpha
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        raise ConfigError(f"backbone.alpha (width multiplier) must be a number > 0, got {alpha!r}")
    cfg.input_size  # noqa: B018 - resolving it runs the rho/resolution checks
    for key, minimum in INTEGER_KEYS.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    lr = OmegaConf.select(cfg, "task.optimizer.lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
        raise ConfigError(f"task.optimizer.lr must be a number > 0, got {lr!r}")
    configured_task_class(cfg).check_config(cfg)
    from mnet_tasks.tasks.base import NONFINITE_LOSS_ACTIONS

    if cfg.task.get("nonfinite_loss", "stop") not in NONFINITE_LOSS_ACTIONS:
        raise ConfigError(f"task.nonfinite_loss must be stop or skip, got {cfg.task.nonfinite_loss!r}")
    if cfg.ckpt_path is None and not cfg.train:
        raise ConfigError("train=false evaluates a checkpoint: set ckpt_path=/path/to/checkpoint.ckpt")
    if cfg.ckpt_path is not None:
        if not Path(cfg.ckpt_path).is_file():
            raise ConfigError(f"ckpt_path: no checkpoint file at {cfg.ckpt_path}")
        load_checkpoint(cfg.ckpt_path, "ckpt_path")


def configured_task_class(cfg: DictConfig) -> type:
    """The registered task class ``task._target_`` names, imported (but not built): its ``check_config`` runs
    before any data. Built-in tasks and plug-ins alike are found in the task registry."""
    from mnet_tasks.registry import RegistryError, task_class_of_target

    try:
        return task_class_of_target(str(cfg.task.get("_target_")))
    except RegistryError as error:
        raise ConfigError(str(error)) from error


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


def compose_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> DictConfig:
    """The same config ``python -m mnet_tasks`` would use, composed in-process (no run folder)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


register_resolvers()
