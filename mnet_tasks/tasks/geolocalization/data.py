"""Geo-tagged photos listed in CSV/TSV files (the MP-16 / YFCC and Im2GPS style), and their cell partition.

Layout (``datasets/README.md``)::

    <root>/train.csv      image,latitude,longitude     one row per photo; image paths relative to the image folder
    <root>/test.csv       the same for the evaluation set (e.g. Im2GPS)
    <root>/...            the images (``data.train_image_dir`` / ``data.val_image_dir``, default ``<root>``)

A ``.tsv`` file is read tab-separated. The header may also use MP-16's names (``IMG_ID,LAT,LON``) or ``path``,
``lat``, ``lon``/``lng``, in any case and column order. Rows with more fields than the header (an unquoted decimal
comma shifts the columns), rows whose coordinates are unparsable, NaN, infinite or out of range, and rows whose image
is missing are skipped, counted and reported with their line numbers (in the log and in ``bad_rows.csv`` in the run
folder).

The DataModule builds the adaptive S2 partitions (:mod:`mnet_tasks.tasks.geolocalization.cells`) from the training
photos, saves them as ``cells.csv`` in the run folder and hands them to the task module through :meth:`head_kwargs`.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnet_tasks.data.bad_files import BadFile, NotedSample, noted
from mnet_tasks.data.datamodule import DecodedImages, ImageDataModule
from mnet_tasks.data.images import ImageReadError, read_rgb
from mnet_tasks.tasks.geolocalization.cells import (
    Partition,
    build_partition,
    describe,
    leaf_cell_ids,
    read_partitions,
    write_partitions,
)
from mnet_tasks.tasks.geolocalization.distance import is_valid_location
from mnet_tasks.tasks.geolocalization.synthetic import GEO_PHOTOS

log = logging.getLogger(__name__)

# Accepted header names (compared lower-case) of the three columns, the first being the preferred one.
COLUMN_NAMES = {
    "image": ("image", "img_id", "img", "path", "image_path", "filename", "file"),
    "latitude": ("latitude", "lat"),
    "longitude": ("longitude", "lon", "lng", "long"),
}
EXPECTED_COLUMNS = "columns image,latitude,longitude (datasets/README.md)"
PARTITION_FILE = "cells.csv"
BAD_ROWS_FILE = "bad_rows.csv"
MISSING_IMAGE = "missing image"  # the row problem whose image is also reported as a skipped file


@dataclass(frozen=True)
class BadRow:
    """A skipped row: the file, its line number (the header is line 1), the kind of problem and the details."""

    source: Path
    line: int
    problem: str
    detail: str


@dataclass
class GeoList:
    """The usable rows of one list: image files and their locations in degrees, and the rows that were skipped.
    Paths are kept as strings: MP-16 lists millions of them, and every loader worker holds a copy."""

    source: Path
    images: list[str]
    locations: np.ndarray  # (N, 2) latitude, longitude
    bad_rows: list[BadRow]


def _find_columns(header: Sequence[str], source: Path) -> dict[str, int]:
    lowered = [name.strip().lower() for name in header]
    columns = {}
    for column, names in COLUMN_NAMES.items():
        found = [lowered.index(name) for name in names if name in lowered]
        if not found:
            raise ValueError(
                f"{source}: the header {list(header)} has no {column} column (accepted names: {', '.join(names)}); "
                f"expected {EXPECTED_COLUMNS}"
            )
        columns[column] = found[0]
    return columns


class RowProblem(ValueError):
    """Why one row of a list cannot be used: a short ``problem`` to count by and the ``detail``."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(f"{problem}: {detail}")
        self.problem, self.detail = problem, detail


def _parse_row(
    row: Sequence[str], columns: dict[str, int], header_size: int, image_dir: Path
) -> tuple[str, float, float]:
    """The image path and location of one row; raises :class:`RowProblem`. A row longer than the header is
    refused: its fields may have shifted (``48,85`` read as latitude 48, longitude 85)."""
    if len(row) > header_size:
        raise RowProblem(
            "too many fields",
            f"{len(row)} fields, the header has {header_size} (a decimal comma in an unquoted number?)",
        )
    if len(row) <= max(columns.values()):
        raise RowProblem("too few fields", f"{len(row)} fields, expected at least {max(columns.values()) + 1}")
    image, lat_text, lon_text = (row[columns[c]].strip() for c in ("image", "latitude", "longitude"))
    coordinates = f"latitude={lat_text!r} longitude={lon_text!r}"
    try:
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        raise RowProblem("unparsable coordinates", coordinates) from None
    if not is_valid_location(lat, lon):
        raise RowProblem("bad coordinates", f"{coordinates}: need finite values, |latitude| <= 90, |longitude| <= 180")
    if not image:
        raise RowProblem("no image path", "the image field is empty")
    path = os.path.join(image_dir, image)
    if not os.path.isfile(path):
        raise RowProblem(MISSING_IMAGE, path)
    return path, lat, lon


def read_geo_list(source: str | Path, image_dir: str | Path) -> GeoList:
    """Read one list; rows that cannot be used are kept aside as :class:`BadRow` (see the module docstring)."""
    source, image_dir = Path(source), Path(image_dir)
    if not source.is_file():
        raise FileNotFoundError(f"no photo list at {source} (expected a CSV or TSV with {EXPECTED_COLUMNS})")
    images, locations, bad_rows = [], [], []
    with open(source, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter="\t" if source.suffix.lower() == ".tsv" else ",")
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{source} is empty (expected a header and rows with {EXPECTED_COLUMNS})")
        columns = _find_columns(header, source)
        for row in reader:
            if not any(field.strip() for field in row):
                continue  # blank lines carry nothing
            try:
                path, lat, lon = _parse_row(row, columns, len(header), image_dir)
            except RowProblem as error:
                bad_rows.append(BadRow(source, reader.line_num, error.problem, error.detail))
                continue
            images.append(path)
            locations.append((lat, lon))
    if not images:
        reasons = f" (line {bad_rows[0].line}: {bad_rows[0].problem}, {bad_rows[0].detail}; ...)" if bad_rows else ""
        raise ValueError(f"{source}: no usable rows out of {len(bad_rows)}{reasons}")
    return GeoList(source, images, np.array(locations, dtype=np.float64).reshape(-1, 2), bad_rows)


def log_bad_rows(listed: GeoList) -> None:
    """One warning per list: how many rows were skipped, by problem, with their first line numbers."""
    if not listed.bad_rows:
        return
    problems = Counter(row.problem for row in listed.bad_rows)
    shown = listed.bad_rows[:10]
    lines = ", ".join(str(row.line) for row in shown) + (", ..." if len(listed.bad_rows) > len(shown) else "")
    log.warning(
        "%s: skipped %d of %d rows (%s) on lines %s",
        listed.source,
        len(listed.bad_rows),
        len(listed.bad_rows) + len(listed.images),
        ", ".join(f"{count} {problem}" for problem, count in problems.items()),
        lines,
    )


def write_bad_rows(path: Path, bad_rows: Sequence[BadRow]) -> None:
    """Every skipped row: ``file,line,problem,detail``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "line", "problem", "detail"])
        writer.writerows([row.source, row.line, row.problem, row.detail] for row in bad_rows)


class GeoDataset(DecodedImages):
    """``(image, location, cell labels)``: the transformed image, its ``(2,)`` float64 latitude/longitude, and
    its ``(heads,)`` int64 cell index in each partition (-1 where it falls in no kept cell); a
    :class:`~mnet_tasks.data.bad_files.BadFile` for an image that cannot be read. ``problems`` and
    ``missing_files``: what listing it found, ``decode_side`` how small a JPEG may be decoded (as
    :class:`~mnet_tasks.data.datamodule.LabelledImageDataset`'s)."""

    decode_side: int | None = None

    def __init__(self, images: Sequence[str], locations: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images = list(images)
        self.locations = torch.as_tensor(locations, dtype=torch.float64)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.transform = transform
        self.problems: Counter[str] = Counter()
        self.missing_files: list[BadFile] = []
        self.unused_files: list[BadFile] = []

    def __len__(self) -> int:
        return len(self.images)

    def decode_image(self, index: int) -> np.ndarray:
        return read_rgb(self.images[index], self.decode_side)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | BadFile | NotedSample:
        try:
            image = self.load_image(index)
        except ImageReadError as error:
            return BadFile.from_error(error)
        sample = self.transform(image=image)["image"], self.locations[index], self.labels[index]
        return noted(sample, self.images[index], image)


class GeoDataModule(ImageDataModule):
    """Geolocation data: photo lists under ``root``, or the built-in synthetic set when ``root`` is null.

    It shares the image handling of :class:`~mnet_tasks.data.datamodule.ImageDataModule` (synthetic fallback,
    transforms, loaders); its classes are the cells of one or more partitions, so :meth:`head_kwargs` hands the
    task the partitions themselves.

    Args:
        root: the dataset folder; null generates the synthetic set with the ``synthetic`` parameters into
            ``cache_dir`` (with ``synthetic`` null as well, ``root`` is required).
        train_csv / val_csv: the lists, relative to ``root`` (``.csv`` or ``.tsv``).
        train_image_dir / val_image_dir: the folders the lists' image paths are relative to (default ``root``).
        partitions: one head per entry, coarse to fine: ``{name, min_per_cell, max_per_cell}`` and optionally
            ``min_level``/``max_level`` (:func:`~mnet_tasks.tasks.geolocalization.cells.build_partition`).
        partition_file: a ``cells.csv`` saved by an earlier run, reused instead of building the partitions
            (evaluating a checkpoint on other data, or inference).
        output_dir: the run folder, where ``cells.csv`` and ``bad_rows.csv`` are written (null: nowhere).
    """

    synthetic_data = GEO_PHOTOS

    def __init__(
        self,
        *,
        train_csv: str = "train.csv",
        val_csv: str = "test.csv",
        train_image_dir: str | None = None,
        val_image_dir: str | None = None,
        partitions: Sequence[Mapping[str, Any]] = ({"name": "cells", "min_per_cell": 10, "max_per_cell": 150},),
        partition_file: str | None = None,
        output_dir: str | None = None,
        **options: Any,
    ) -> None:
        self.train_csv, self.val_csv = train_csv, val_csv
        self.expected_layout = f"<root>/{train_csv} and <root>/{val_csv} with {EXPECTED_COLUMNS}"
        super().__init__(**{"train_scale": (0.5, 1.0), **options})
        self.partition_specs = [self._check_spec(index, spec) for index, spec in enumerate(partitions)]
        if not self.partition_specs and partition_file is None:
            raise ValueError("data.partitions is empty: give at least one {name, min_per_cell, max_per_cell}")
        self.partition_file = Path(partition_file).expanduser() if partition_file is not None else None
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.image_dirs = {"train": train_image_dir, "val": val_image_dir}
        self._partitions: list[Partition] | None = None
        self._lists: dict[str, GeoList] = {}

    @staticmethod
    def _check_spec(index: int, spec: Mapping[str, Any]) -> dict[str, Any]:
        spec = dict(spec)
        known = {"name", "min_per_cell", "max_per_cell", "min_level", "max_level"}
        missing = {"name", "min_per_cell", "max_per_cell"} - spec.keys()
        if missing or not spec.keys() <= known:
            raise ValueError(
                f"data.partitions[{index}] = {spec}: needs name, min_per_cell and max_per_cell "
                f"(optional: min_level, max_level); missing {sorted(missing)}, unknown {sorted(spec.keys() - known)}"
            )
        return spec

    # --- the format's hooks (ImageDataModule) ---

    def check_layout(self) -> None:
        """Both lists must exist; evaluating with a saved partition (``partition_file``) needs no training list."""
        for split, key in (("train", "data.train_csv"), ("val", "data.val_csv")):
            if not self._list_path(split).is_file() and (split == "val" or self.partition_file is None):
                raise FileNotFoundError(
                    f"missing {self._list_path(split)} ({key}; data.root={self.root}; expected {self.expected_layout})"
                )

    @property
    def class_names(self) -> list[str]:
        """``<partition>/<cell token>`` of every head's cells, in head and cell order."""
        return [f"{partition.name}/{token}" for partition in self.partitions for token in partition.tokens]

    def head_kwargs(self) -> dict[str, Any]:
        """The partitions as plain lists (tokens, counts, centroids), from which the task builds one head each."""
        return {"partitions": [partition.to_hparams() for partition in self.partitions]}

    def build_dataset(self, split: str, transform: Callable[..., dict]) -> GeoDataset:
        """All evaluation photos (scored whether in a kept cell or not); the training photos in a kept cell of at
        least one head (PlaNet drops the others with their cells: they would teach nothing)."""
        listed = self.geo_list(split)
        labels = self.cell_labels(listed.locations)
        usable = (labels >= 0).any(axis=1) if split == "train" else np.ones(len(labels), dtype=bool)
        if not usable.all():
            log.info("%d of %d training photos lie in no kept cell and are left out", (~usable).sum(), len(usable))
        images = [path for path, keep in zip(listed.images, usable, strict=True) if keep]
        dataset = GeoDataset(images, listed.locations[usable], labels[usable], transform)
        for row in listed.bad_rows:
            dataset.problems[f"row with {row.problem}, skipped"] += 1
            if row.problem == MISSING_IMAGE:
                dataset.missing_files.append(
                    BadFile(row.detail, f"missing file, listed in {row.source.name} line {row.line}")
                )
        if not usable.all():
            dataset.problems["training photo in no kept cell, left out"] = int((~usable).sum())
        return dataset

    # --- lists and partitions ---

    def _list_path(self, split: str) -> Path:
        return self.data_dir / (self.train_csv if split == "train" else self.val_csv)

    def _image_dir(self, split: str) -> Path:
        folder = self.image_dirs[split]
        return self.data_dir if folder is None else self.data_dir / folder

    def geo_list(self, split: str) -> GeoList:
        """The ``train`` or ``val`` list, read once; its skipped rows are logged and added to ``bad_rows.csv``."""
        if split not in self._lists:
            listed = read_geo_list(self._list_path(split), self._image_dir(split))
            log_bad_rows(listed)
            self._lists[split] = listed
            bad_rows = [row for known in self._lists.values() for row in known.bad_rows]
            if bad_rows and self.output_dir is not None:
                write_bad_rows(self.output_dir / BAD_ROWS_FILE, bad_rows)
        return self._lists[split]

    @property
    def partitions(self) -> list[Partition]:
        """The cell partitions, one per head: read from ``partition_file`` or built from the training list on first
        use, and saved as ``cells.csv`` in the run folder."""
        if self._partitions is None:
            if self.partition_file is not None:
                partitions = read_partitions(self.partition_file)
            else:
                locations = self.geo_list("train").locations
                partitions = [
                    build_partition(latitudes=locations[:, 0], longitudes=locations[:, 1], **spec)
                    for spec in self.partition_specs
                ]
            if self.output_dir is not None:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                write_partitions(self.output_dir / PARTITION_FILE, partitions)
            log.info("cell partitions: %s", describe(partitions))
            self._partitions = partitions
        return self._partitions

    def cell_labels(self, locations: np.ndarray) -> np.ndarray:
        """``(N, heads)`` cell index of each location in each partition, -1 outside every kept cell."""
        leaf_ids = leaf_cell_ids(locations[:, 0], locations[:, 1])
        return np.stack([partition.cell_index(leaf_ids) for partition in self.partitions], axis=1)
