"""One policy for bad files in every loader: skip them, count them, report them, stop when there are too many.

A dataset returns a :class:`BadFile` in place of a sample whose image cannot be read (missing, empty, truncated,
not an image; :func:`~mnet_tasks.data.images.read_rgb` has already converted every readable odd format). The
DataModules load through :class:`SkippingDataLoader`, whose collate function drops the markers: the skipped file
names travel inside the batch from the worker process that read them to the main process, where the loader records
them in the DataModule's :class:`SkippedFiles` (files listed but missing are recorded at setup too). A batch left
empty is not yielded. A sample that is used but worth a remark (a tiny image) travels as a :class:`NotedSample`,
and files of other types beside the images are listed too: every file is used or named with its reason.
:class:`BadFileReport`, a callback every run adds, writes what the data dropped before training
(``data_report.json``, brought up to date with the skips), logs the skips after every epoch with the distinct files
in ``skipped_files.csv``, and stops the run once more files than ``data.max_skipped_files`` were skipped.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, default_collate

from mnet_tasks.data.images import ImageReadError
from mnet_tasks.distributed import gather_objects, is_distributed

log = logging.getLogger(__name__)

SKIPPED_FILES = "skipped_files.csv"
DATA_REPORT = "data_report.json"
LIMIT_KEY = "data.max_skipped_files"
TINY_SIDE = 16  # px: an image with a shorter side holds next to nothing once resized to the model's input
UNREADABLE = "unreadable, skipped"  # data_report.json: listed files found unreadable when loaded


@dataclass(frozen=True)
class BadFile:
    """What a dataset returns in place of a sample whose file cannot be used, and why."""

    path: str
    reason: str

    @classmethod
    def from_error(cls, error: ImageReadError) -> BadFile:
        return cls(error.path, error.reason)


@dataclass(frozen=True)
class NotedSample:
    """A sample that is used, with a remark on its file for the report (e.g. a tiny image, upscaled)."""

    sample: Any
    note: BadFile


def noted(sample: Any, path: str | Path, image: np.ndarray) -> Any:
    """``sample``, or the sample with a note when its image is so small that the transform blows it up."""
    height, width = image.shape[:2]
    if min(height, width) >= TINY_SIDE:
        return sample
    return NotedSample(
        sample, BadFile(str(path), f"tiny image ({width}x{height} px), upscaled to the input size, used")
    )


class TooManyBadFiles(RuntimeError):
    """More distinct files were skipped than ``data.max_skipped_files`` allows."""


class SkippedFiles:
    """The distinct files a DataModule skipped, by split, with the first reason seen, and how many samples were
    skipped since the last report.

    Args:
        limit: ``data.max_skipped_files``: the most distinct files that may be skipped (None: no limit). A single
            process stops as soon as it is exceeded; a distributed run checks at the end of each epoch, on every rank
            at once, after gathering the ranks' files.
    """

    def __init__(self, limit: int | None) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"{LIMIT_KEY} must be an integer >= 0 or null (no limit), got {limit!r}")
        self.limit = limit
        self.reasons: dict[tuple[str, str], str] = {}  # (split, path) -> reason
        self.unreadable: set[tuple[str, str]] = set()  # the (split, path) of reasons met while loading samples
        self.notes: dict[tuple[str, str], str] = {}  # files used or left out for other reasons: listed, not counted
        self.since_report: Counter[str] = Counter()  # split -> samples skipped

    def add(self, split: str, bad_files: Iterable[BadFile], loading: bool = True) -> None:
        """Record files skipped while ``loading`` samples (counted for the epoch's report), or found missing while
        listing the data (``loading=False``)."""
        for bad in bad_files:
            if loading and (split, bad.path) not in self.reasons:
                self.unreadable.add((split, bad.path))
            self.reasons.setdefault((split, bad.path), bad.reason)
            if loading:
                self.since_report[split] += 1
        if not is_distributed():
            self.check_limit()

    def check_limit(self) -> None:
        if self.limit is None or len(self.reasons) <= self.limit:
            return
        (split, path), reason = next(reversed(self.reasons.items()))
        raise TooManyBadFiles(
            f"{len(self.reasons)} files could not be read, more than {LIMIT_KEY}={self.limit} allows (the last: "
            f"{split} {path}: {reason}); each is listed in {SKIPPED_FILES} in the run folder. Fix or remove them, "
            f"or raise {LIMIT_KEY} (null: no limit)"
        )

    def add_notes(self, split: str, files: Iterable[BadFile]) -> None:
        """Record files that are no failure to read (of another type, tiny): listed, not held against the limit."""
        self.notes.update(((split, bad.path), bad.reason) for bad in files)

    def unreadable_per_split(self) -> Counter[str]:
        """Distinct files per split that were listed but could not be read when loaded."""
        return Counter(split for split, _ in self.unreadable)

    def write_csv(self, path: Path) -> None:
        """``split,file,reason`` per distinct file, sorted."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["split", "file", "reason"])
            rows = sorted({**self.notes, **self.reasons}.items())
            writer.writerows([split, file, reason] for (split, file), reason in rows)


@dataclass(frozen=True)
class LoadedBatch:
    """A collated batch of the readable samples (None if there were none), the markers of the others and the notes
    on used ones."""

    batch: Any
    bad_files: list[BadFile]
    notes: list[BadFile]


class DropBadFiles:
    """A collate function: collates the samples that are not :class:`BadFile` with ``collate`` and carries the
    markers beside them (it runs in the loader's worker process, so nothing else could carry them out)."""

    def __init__(self, collate: Callable[[list], Any]) -> None:
        self.collate = collate

    def __call__(self, samples: list) -> LoadedBatch:
        notes = [sample.note for sample in samples if isinstance(sample, NotedSample)]
        samples = [sample.sample if isinstance(sample, NotedSample) else sample for sample in samples]
        good = [sample for sample in samples if not isinstance(sample, BadFile)]
        bad = [sample for sample in samples if isinstance(sample, BadFile)]
        return LoadedBatch(self.collate(good) if good else None, bad, notes)


class SkippingDataLoader(DataLoader):
    """A DataLoader whose batches lack the samples the dataset marked as :class:`BadFile`: it records them in
    ``skipped`` (its own, without a limit, if None) under ``split`` and yields no empty batch. Otherwise a plain
    DataLoader, which Lightning can rebuild with a distributed sampler and other DataLoaders can derive from."""

    def __init__(
        self,
        dataset: Dataset,
        *args: Any,
        skipped: SkippedFiles | None = None,
        split: str = "train",
        collate_fn: Callable[[list], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(collate_fn, DropBadFiles):  # a rebuilt loader is handed its predecessor's collate_fn
            collate_fn = DropBadFiles(collate_fn or default_collate)
        super().__init__(dataset, *args, collate_fn=collate_fn, **kwargs)
        self.skipped = skipped if skipped is not None else SkippedFiles(limit=None)
        self.split = split

    def __iter__(self) -> Iterator[Any]:
        for loaded in super().__iter__():
            if loaded.bad_files:
                self.skipped.add(self.split, loaded.bad_files)
            if loaded.notes:
                self.skipped.add_notes(self.split, loaded.notes)
            if loaded.batch is not None:
                yield loaded.batch


def describe_report(report: Mapping[str, Mapping[str, int]]) -> str:
    """One line per split or list file: its samples, then each problem with its count."""
    lines = []
    for scope, counts in report.items():
        parts = [f"{count} samples" if key == "samples" else f"{count} x {key}" for key, count in counts.items()]
        lines.append(f"  {scope}: {'; '.join(parts)}")
    return "\n".join(lines)


class BadFileReport(pl.Callback):
    """What the data dropped, in the run folder: ``data_report.json`` (the DataModule's ``data_report()``: samples
    and problems per split, found while listing the data) before training, and after every epoch a log line and
    ``skipped_files.csv`` (every distinct file skipped so far). Stops the run over ``data.max_skipped_files``.

    Both are optional parts of a DataModule (:class:`~mnet_tasks.data.datamodule.ImageDataModule` has them): with
    no ``data_report()`` the report names the dataset only, and with no ``skipped_files`` (a :class:`SkippedFiles`
    that its :class:`SkippingDataLoader` fill) there is nothing to list.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.listed: dict[str, dict[str, int]] = {}  # the DataModule's data_report() after listing
        self.dataset: str | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning calls this right after the DataModule's setup: the datasets are listed, nothing trained yet.
        datamodule = trainer.datamodule
        self.listed = datamodule.data_report() if hasattr(datamodule, "data_report") else {}
        self.dataset = getattr(datamodule, "dataset_name", None)
        if trainer.is_global_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.write_data_report(skipped_files_of(trainer))
            if self.listed:
                log.info("data (%s):\n%s", self.output_dir / DATA_REPORT, describe_report(self.listed))

    def write_data_report(self, skipped: SkippedFiles | None) -> None:
        """``data_report.json``: what listing found, with the samples that turned out unreadable since taken out of
        ``samples`` and counted under ``unreadable, skipped`` (the same files as ``skipped_files.csv``)."""
        report = {split: dict(counts) for split, counts in self.listed.items()}
        unreadable = skipped.unreadable_per_split() if skipped is not None else Counter()
        for split, count in unreadable.items():
            if "samples" in report.get(split, {}):
                report[split]["samples"] -= count
                report[split][UNREADABLE] = count
        (self.output_dir / DATA_REPORT).write_text(json.dumps({"dataset": self.dataset, **report}, indent=2) + "\n")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._report(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        skipped = skipped_files_of(trainer)
        if skipped is not None and trainer.is_global_zero:
            skipped.write_csv(self.output_dir / SKIPPED_FILES)
            self.write_data_report(skipped)

    def _report(self, trainer: pl.Trainer) -> None:
        skipped = skipped_files_of(trainer)
        if skipped is None:
            return
        since_report: Counter[str] = Counter()
        gathered = gather_objects((skipped.reasons, skipped.unreadable, skipped.notes, skipped.since_report))
        for reasons, unreadable, notes, counts in gathered:
            for key, reason in reasons.items():
                skipped.reasons.setdefault(key, reason)
            skipped.unreadable |= unreadable
            skipped.notes.update(notes)
            since_report.update(counts)
        skipped.since_report = Counter()
        if trainer.is_global_zero and (skipped.reasons or skipped.notes):
            skipped.write_csv(self.output_dir / SKIPPED_FILES)
            self.write_data_report(skipped)
        if since_report and trainer.is_global_zero:
            log.warning(
                "epoch %d: skipped %s unreadable samples; %d distinct files skipped so far (%s=%s), listed in %s",
                trainer.current_epoch,
                " + ".join(f"{count} {split}" for split, count in sorted(since_report.items())),
                len(skipped.reasons),
                LIMIT_KEY,
                skipped.limit,
                self.output_dir / SKIPPED_FILES,
            )
        skipped.check_limit()


def skipped_files_of(trainer: pl.Trainer) -> SkippedFiles | None:
    """The DataModule's record of skipped files, if it keeps one."""
    skipped = getattr(trainer.datamodule, "skipped_files", None)
    return skipped if isinstance(skipped, SkippedFiles) else None
