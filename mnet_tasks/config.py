"""Where the configs live, how they are composed, and how the input size is resolved."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from mnet_tasks.backbone import MIN_INPUT_SIZE
from mnet_tasks.weights import pretrained_normalize


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


def resolve_normalize(pretrained: str | None, key: str) -> ListConfig:
    """``mean`` or ``std`` of the weights ``backbone.pretrained`` names (:func:`.weights.pretrained_normalize`), as
    a config node (a plain list would not survive OmegaConf's in-place ``resolve``)."""
    try:
        return OmegaConf.create(pretrained_normalize(pretrained)[key])
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"backbone.pretrained={pretrained}: its input normalisation cannot be read ({error})"
        ) from error


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("mnet.input_size"):
        OmegaConf.register_new_resolver("mnet.input_size", resolve_input_size)
    if not OmegaConf.has_resolver("mnet.normalize"):
        OmegaConf.register_new_resolver("mnet.normalize", resolve_normalize)


def compose_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> DictConfig:
    """The same config ``python -m mnet_tasks`` would use, composed in-process (no run folder)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


register_resolvers()
