"""The task registry: every task, built-in or from another installed package, is found the same way.

A package registers its task classes under the entry-point group ``mnet_tasks.tasks`` (name → TaskModule
subclass) and the folder of its Hydra configs under ``mnet_tasks.configs`` (name → a Python package holding
``task/<name>.yaml``, ``data/<name>.yaml``, ...). mnet_tasks registers its own five tasks exactly so, in its
pyproject.toml; ``hydra_plugins/mnet_tasks_searchpath.py`` puts every registered config package on Hydra's
search path (``python -m mnet_tasks --info searchpath`` lists them).
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytorch_lightning import LightningModule

TASKS_GROUP = "mnet_tasks.tasks"
CONFIGS_GROUP = "mnet_tasks.configs"
CHECKPOINT_KEY = "mnet_tasks"  # a checkpoint's entry naming its registered task class (``task_class``)


class RegistryError(LookupError):
    """A task that is not registered, or a registered entry that does not load; the message says which."""


@functools.cache
def task_entry_points() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=TASKS_GROUP)}


def config_packages() -> list[str]:
    """The Python packages holding registered Hydra configs, in a stable order."""
    return sorted({entry.value for entry in entry_points(group=CONFIGS_GROUP)})


def registered_names() -> list[str]:
    return sorted(task_entry_points())


@functools.cache
def task_class(name: str) -> type[LightningModule]:
    """The task class registered as ``name`` (the caller that builds it checks that it is a ``TaskModule``)."""
    from pytorch_lightning import LightningModule

    entry = task_entry_points().get(name)
    if entry is None:
        raise RegistryError(
            f"no task class registered as {name!r} in the {TASKS_GROUP!r} entry points "
            f"(registered: {', '.join(registered_names()) or 'none'}); is its package installed?"
        )
    try:
        cls = entry.load()
    except Exception as error:
        raise RegistryError(f"task {name!r} ({entry.value}) cannot be imported: {error}") from error
    if not (isinstance(cls, type) and issubclass(cls, LightningModule)):
        raise RegistryError(f"task {name!r} ({entry.value}) is not a LightningModule (subclass mnet_tasks TaskModule)")
    return cls


def _name_of(path: str) -> str | None:
    """The name registered for the object at ``module:qualname`` (None if none), without importing any task."""
    return next((name for name, entry in task_entry_points().items() if entry.value == path), None)


def registered_name(cls: type) -> str | None:
    """The name ``cls`` is registered under (None if it is not). An entry may name the class where its package
    exports it (``pkg:Task``) while it is defined in a submodule (``pkg.module``); only entries of the class's own
    package are loaded to compare."""
    for name, entry in task_entry_points().items():
        package = entry.value.partition(":")[0]
        if (cls.__module__ == package or cls.__module__.startswith(f"{package}.")) and entry.load() is cls:
            return name
    return None


def task_class_of_target(target: str) -> type[LightningModule]:
    """The registered task class a config's ``task._target_`` names."""
    module, _, qualname = target.rpartition(".")
    name = _name_of(f"{module}:{qualname}")
    if name is None:
        raise RegistryError(
            f"task._target_={target} is not a registered task class: register it in the {TASKS_GROUP!r} entry "
            f"points of its package (tests/plugin_example/README.md); registered: {', '.join(registered_names())}"
        )
    return task_class(name)


def trusted_packages() -> list[str]:
    """Top-level packages of the registered task classes: their code is what the user installed to run."""
    return sorted({entry.value.split(":")[0].split(".")[0] for entry in task_entry_points().values()})
