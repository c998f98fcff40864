"""The built-in synthetic datasets: how each is described (:class:`SyntheticData`) and written once into its own
folder, safely.

Each parameter set gets a folder ``<name>-<digest>`` in the cache, so changing a generator's parameters creates a
new dataset instead of clashing with the old one. Files are written into a private temp folder, a marker holding
the parameters goes in last, and the folder is renamed into place, so an interrupted run never looks complete and
two runs sharing a cache never write into each other's files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER_NAME = ".complete.json"


def dataset_folder_name(dataset_name: str, params: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return f"{dataset_name}-{digest}"


def is_complete(root: Path, params: dict[str, Any]) -> bool:
    """True if ``root`` already holds the dataset of ``params``; raises if it holds anything else."""
    marker = root / MARKER_NAME
    if marker.is_file():
        try:
            existing = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            existing = f"an unreadable {MARKER_NAME}"
        if existing == params:
            return True
        raise ValueError(
            f"{root} holds a synthetic dataset generated with other parameters: it has {existing}, "
            f"but {params} was requested. Delete {root} to regenerate it, or choose another data.cache_dir."
        )
    if root.exists() and any(root.iterdir()):
        raise ValueError(
            f"{root} exists but holds no complete synthetic dataset (no {MARKER_NAME}). "
            f"Delete {root} to generate one there, or choose another data.cache_dir."
        )
    return False


def write_once(root: str | Path, params: dict[str, Any], write: Callable[[Path], None]) -> Path:
    """Call ``write(folder)`` to fill a fresh folder and move it to ``root``, unless ``root`` is already done."""
    root = Path(root)
    if is_complete(root, params):
        return root
    partial = root.with_name(f".{root.name}.partial-{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    try:
        write(partial)
        (partial / MARKER_NAME).write_text(json.dumps(params, indent=2) + "\n")
        if root.exists() and not any(root.iterdir()):
            root.rmdir()
        try:
            partial.rename(root)
        except OSError:
            # Another run finished first; its dataset is kept if it is the same one.
            if not is_complete(root, params):
                raise
            shutil.rmtree(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return root


@dataclass(frozen=True)
class Parameter:
    """One ``data.synthetic`` key of a generator: its default and the range it must lie in (``maximum`` None: no
    upper bound). The default's type (int or float) is the key's type."""

    default: int | float
    minimum: int | float
    maximum: int | float | None = None


@dataclass(frozen=True)
class SyntheticData:
    """A task's built-in dataset generator, which a DataModule uses when no ``data.root`` is given.

    Attributes:
        name: the dataset's name (``metrics.json``'s ``dataset``, the stem of its cache folder).
        version: the generator's version, part of every parameter set: bump it when the drawing changes, so that an
            old cache is not taken for the new dataset.
        parameter_specs: the ``data.synthetic`` keys, each with its default and range.
        write: fills an empty folder with the dataset of the given complete parameters, in the real dataset's
            file format.
    """

    name: str
    version: int
    parameter_specs: Mapping[str, Parameter]
    write: Callable[[Path, dict[str, Any]], None]

    def parameters(self, **given: Any) -> dict[str, Any]:
        """The complete parameters (defaults filled in, the version added), or a ``ValueError`` naming the first
        ``data.synthetic`` key that is unknown, of the wrong type or out of range."""
        if unknown := sorted(set(given) - set(self.parameter_specs)):
            raise ValueError(
                f"{self.name}: data.synthetic.{unknown[0]} is not a parameter (choose from "
                f"{', '.join(self.parameter_specs)})"
            )
        params: dict[str, Any] = {"generator_version": self.version}
        for key, spec in self.parameter_specs.items():
            value, kind = given.get(key, spec.default), type(spec.default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise ValueError(f"{self.name}: data.synthetic.{key} must be {kind.__name__}, got {value!r}")
            value = kind(value)
            if value < spec.minimum or (spec.maximum is not None and value > spec.maximum):
                allowed = f"at least {spec.minimum}" if spec.maximum is None else f"{spec.minimum} to {spec.maximum}"
                raise ValueError(f"{self.name}: data.synthetic.{key} must be {allowed}, got {value}")
            params[key] = value
        return params

    def folder_name(self, **params: Any) -> str:
        """The cache subfolder of the dataset with ``params`` (a digest of the complete parameters)."""
        return dataset_folder_name(self.name, self.parameters(**params))

    def generate(self, root: str | Path, **params: Any) -> Path:
        """Write the dataset with ``params`` to ``root`` unless it is there already; return ``root``."""
        complete = self.parameters(**params)
        return write_once(root, complete, lambda folder: self.write(folder, complete))
