"""Adaptive S2 cell partitions of the earth, built from photo locations as PlaNet does.

Start from the S2 cells of a coarse level, split every cell that holds more than ``max_per_cell`` photos into
its four children (down to ``max_level``), and drop the cells left with fewer than ``min_per_cell`` photos. The
kept cells are disjoint, so a location falls in at most one of them: the cells are the classes of one head.

S2 cell ids enumerate the sphere along a Hilbert curve and a cell owns the contiguous id range
``[range_min, range_max]`` of its leaf cells, so counting and assigning photos is a binary search over their
sorted leaf ids. All cell geometry comes from the s2geometry library.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import s2geometry as s2
import torch

from mnet_tasks.tasks.geolocalization.distance import is_valid_location, to_lat_lon, to_unit_vectors

log = logging.getLogger(__name__)

CSV_COLUMNS = ("partition", "token", "level", "count", "latitude", "longitude")
MAX_S2_LEVEL = 30


@dataclass(frozen=True)
class Cell:
    """One class: an S2 cell, how many training photos it holds, and their centroid (degrees)."""

    token: str
    level: int
    count: int
    latitude: float
    longitude: float


def leaf_cell_ids(latitudes: Iterable[float], longitudes: Iterable[float]) -> np.ndarray:
    """The S2 leaf cell id (uint64) of each location in degrees."""
    pairs = zip(latitudes, longitudes, strict=True)
    return np.array([s2.S2CellId(s2.S2LatLng.FromDegrees(float(a), float(b))).id() for a, b in pairs], dtype=np.uint64)


def _cell_id(token: str) -> s2.S2CellId:
    cell = s2.S2CellId.FromToken(token)
    if not cell.is_valid():
        raise ValueError(f"{token!r} is not a valid S2 cell token")
    return cell


def _leaf_range(cell: s2.S2CellId) -> tuple[np.uint64, np.uint64]:
    return np.uint64(cell.range_min().id()), np.uint64(cell.range_max().id())


@dataclass(frozen=True)
class Partition:
    """Disjoint S2 cells sorted by cell id: the classes of one head.

    ``dropped`` holds, for a freshly built partition, the cells discarded for holding too few photos
    (not saved, not compared: a partition read back from its CSV has none).
    """

    name: str
    cells: tuple[Cell, ...]
    dropped: tuple[Cell, ...] = field(default=(), compare=False)
    _range_min: np.ndarray = field(init=False, repr=False, compare=False)
    _range_max: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"partition name {self.name!r} must be a Python identifier (it names a model head)")
        if not self.cells:
            raise ValueError(f"partition {self.name!r} has no cells")
        ranges = np.array([_leaf_range(_cell_id(cell.token)) for cell in self.cells], dtype=np.uint64)
        if np.any(ranges[1:, 0] <= ranges[:-1, 1]):
            overlap = int(np.flatnonzero(ranges[1:, 0] <= ranges[:-1, 1])[0])
            raise ValueError(
                f"partition {self.name!r}: cells must be disjoint and sorted by cell id, but "
                f"{self.cells[overlap].token} is followed by {self.cells[overlap + 1].token}"
            )
        object.__setattr__(self, "_range_min", ranges[:, 0].copy())
        object.__setattr__(self, "_range_max", ranges[:, 1].copy())

    def __len__(self) -> int:
        return len(self.cells)

    @property
    def tokens(self) -> list[str]:
        return [cell.token for cell in self.cells]

    @property
    def centroids(self) -> np.ndarray:
        """``(cells, 2)`` latitude and longitude in degrees."""
        return np.array([(cell.latitude, cell.longitude) for cell in self.cells], dtype=np.float64)

    def cell_index(self, leaf_ids: np.ndarray) -> np.ndarray:
        """The index of the cell holding each leaf id, or -1 where no cell of the partition does."""
        leaf_ids = np.asarray(leaf_ids, dtype=np.uint64)
        index = np.searchsorted(self._range_min, leaf_ids, side="right").astype(np.int64) - 1
        inside = (index >= 0) & (leaf_ids <= self._range_max[np.maximum(index, 0)])
        return np.where(inside, index, -1)

    def assign(self, latitudes: Iterable[float], longitudes: Iterable[float]) -> np.ndarray:
        """The cell index of each location in degrees, -1 outside every cell."""
        return self.cell_index(leaf_cell_ids(latitudes, longitudes))

    def to_hparams(self) -> dict[str, Any]:
        """Plain lists, so that a checkpoint's hyperparameters stay loadable with ``weights_only=True``."""
        return {
            "name": self.name,
            "tokens": self.tokens,
            "counts": [cell.count for cell in self.cells],
            "latitudes": [cell.latitude for cell in self.cells],
            "longitudes": [cell.longitude for cell in self.cells],
        }

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any]) -> Partition:
        columns = (hparams["tokens"], hparams["counts"], hparams["latitudes"], hparams["longitudes"])
        cells = tuple(
            Cell(token, _cell_id(token).level(), int(count), float(lat), float(lon))
            for token, count, lat, lon in zip(*columns, strict=True)
        )
        return cls(hparams["name"], cells)


def build_partition(
    name: str,
    latitudes: Sequence[float],
    longitudes: Sequence[float],
    min_per_cell: int,
    max_per_cell: int,
    min_level: int = 2,
    max_level: int = 13,
) -> Partition:
    """PlaNet's adaptive partition of the photos at ``latitudes``/``longitudes`` (degrees).

    Cells start at ``min_level`` (level 2: 96 cells of about 2,500 km over the earth) and split while they hold
    more than ``max_per_cell`` photos, down to ``max_level`` (level 13: about 1 km, the finest Im2GPS scale), where
    a crowded cell is kept as it is. Cells with fewer than ``min_per_cell`` photos are dropped. The result
    depends only on the set of locations, not on their order.
    """
    if not 1 <= min_per_cell <= max_per_cell:
        raise ValueError(
            f"partition {name!r}: need 1 <= min_per_cell <= max_per_cell, got min_per_cell={min_per_cell}, "
            f"max_per_cell={max_per_cell}"
        )
    if not 0 <= min_level <= max_level <= MAX_S2_LEVEL:
        raise ValueError(
            f"partition {name!r}: need 0 <= min_level <= max_level <= {MAX_S2_LEVEL}, "
            f"got min_level={min_level}, max_level={max_level}"
        )
    leaf_ids = leaf_cell_ids(latitudes, longitudes)
    order = np.argsort(leaf_ids, kind="stable")
    sorted_ids = leaf_ids[order]
    vectors = to_unit_vectors(torch.as_tensor(latitudes)[order], torch.as_tensor(longitudes)[order])

    def photo_range(cell: s2.S2CellId) -> tuple[int, int]:
        low, high = _leaf_range(cell)
        return int(np.searchsorted(sorted_ids, low, "left")), int(np.searchsorted(sorted_ids, high, "right"))

    def summary(cell: s2.S2CellId, start: int, stop: int) -> Cell:
        lat, lon = to_lat_lon(vectors[start:stop].sum(0)).tolist()
        return Cell(cell.ToToken(), cell.level(), stop - start, lat, lon)

    kept: list[Cell] = []
    dropped: list[Cell] = []
    # Depth first in child order follows the Hilbert curve, so the cells come out sorted by id.
    pending = [s2.S2CellId.FromFacePosLevel(face, 0, 0) for face in reversed(range(6))]
    while pending:
        cell = pending.pop()
        start, stop = photo_range(cell)
        count = stop - start
        if count == 0:
            continue
        if cell.level() < min_level or (count > max_per_cell and cell.level() < max_level):
            pending.extend(cell.child(position) for position in reversed(range(4)))
        elif count >= min_per_cell:
            kept.append(summary(cell, start, stop))
        else:
            dropped.append(summary(cell, start, stop))
    if len(kept) < 2:
        raise ValueError(
            f"partition {name!r}: only {len(kept)} cell(s) of {len(sorted_ids)} photos hold min_per_cell="
            f"{min_per_cell} photos; a head needs at least 2 cells (lower min_per_cell or max_per_cell)"
        )
    partition = Partition(name, tuple(kept), tuple(dropped))
    dropped_photos = sum(cell.count for cell in dropped)
    log.info(
        "partition %r: %d cells (levels %d-%d) from %d photos; %d photos in %d cells under min_per_cell=%d dropped",
        name,
        len(kept),
        min(c.level for c in kept),
        max(c.level for c in kept),
        len(sorted_ids),
        dropped_photos,
        len(dropped),
        min_per_cell,
    )
    return partition


def write_partitions(path: str | Path, partitions: Sequence[Partition]) -> Path:
    """One CSV row per cell (``CSV_COLUMNS``), written to a temporary file first so readers never see half."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(partial, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for partition in partitions:
            for cell in partition.cells:
                # Floats at full precision: a partition read back predicts exactly what the saved one did.
                writer.writerow([partition.name, cell.token, cell.level, cell.count, cell.latitude, cell.longitude])
    os.replace(partial, path)
    return path


def read_partitions(path: str | Path) -> list[Partition]:
    """Partitions saved by :func:`write_partitions`, in the order of the file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no partition file at {path} (a training run saves its cells.csv in its folder)")
    rows: dict[str, list[Cell]] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != CSV_COLUMNS:
            raise ValueError(f"{path}: the header must be {','.join(CSV_COLUMNS)}, got {header}")
        for line, row in enumerate(reader, start=2):
            try:
                name, token, level, count, lat, lon = row
                cell = Cell(token, int(level), int(count), float(lat), float(lon))
                if _cell_id(token).level() != cell.level:
                    raise ValueError(f"cell {token} is at level {_cell_id(token).level()}, not {cell.level}")
                if not is_valid_location(cell.latitude, cell.longitude):
                    raise ValueError(f"centroid ({lat}, {lon}) is not a latitude/longitude in degrees")
            except ValueError as error:
                raise ValueError(f"{path}, line {line}: {error}") from error
            rows.setdefault(name, []).append(cell)
    try:
        return [Partition(name, tuple(cells)) for name, cells in rows.items()]
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def describe(partitions: Sequence[Partition]) -> str:
    """``coarse: 12 cells, fine: 57 cells`` for logs and messages."""
    return ", ".join(f"{p.name}: {len(p)} cells" for p in partitions)
