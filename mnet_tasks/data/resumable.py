"""A training DataLoader that a checkpoint can resume mid-epoch, with the same order and the same augmentations.

Lightning restores the training loop at the step a checkpoint was written, but a plain DataLoader restarts its
epoch from the first batch, and each worker's augmentation stream depends on how many images it has already seen.
Here the order of an epoch depends only on ``(seed, epoch)`` (as ``DistributedSampler``'s does), every image's
augmentation is seeded by ``(seed, epoch, index)`` (so it depends neither on the worker that loads it nor on the
number of workers), and the DataLoader reports how many batches of the epoch it has handed out: Lightning saves
that with the checkpoint (``state_dict``) and gives it back on resume (``load_state_dict``), and the epoch then
goes on from the next batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from mnet_tasks.data.bad_files import SkippingDataLoader


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of image ``index`` in ``epoch``: independent of order, worker and process."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class ResumableSampler(DistributedSampler):
    """``DistributedSampler``'s shuffled order (this rank's share; one rank outside DDP) as ``(index, seed)``
    pairs for :class:`SeededSamples`, able to start an epoch after its first ``skip`` samples.

    Being a ``DistributedSampler``, Lightning keeps it under DDP instead of wrapping it in one of its own.
    """

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0  # samples of the next epoch already trained on (consumed by the next __iter__)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, self.skip = self.skip, 0
        for index in list(super().__iter__())[start:]:
            yield index, sample_seed(self.seed, self.epoch, index)


class SeededSamples(Dataset):
    """Reads ``(index, seed)`` pairs: seeds ``dataset.transform`` with the pair's seed, then returns
    ``dataset[index]``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    @property
    def transform(self) -> Any:
        """The wrapped dataset's (the workers' init function seeds it)."""
        return self.dataset.transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        self.dataset.transform.set_random_seed(seed)
        return self.dataset[index]


class _EpochPositionLoader(DataLoader):
    """Counts the batches of the epoch its sampler has produced (before any are dropped as unreadable) and, after
    ``load_state_dict``, starts the checkpoint's epoch after them.

    The epoch's iterator starts lazily, on its first batch: by then Lightning has called ``set_epoch``, so a
    resumed epoch is skipped into only if it is the epoch the checkpoint was written in.
    """

    sampler: ResumableSampler

    def __init__(self, dataset: Dataset, *args: Any, **kwargs: Any) -> None:
        super().__init__(dataset, *args, **kwargs)
        self.batches_done = 0  # batches of the current epoch handed out or dropped
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint

    def __iter__(self) -> Iterator[Any]:
        self.batches_done = 0
        if self.resume_at is not None and self.resume_at[0] == self.sampler.epoch:
            self.batches_done = self.resume_at[1]
            self.sampler.skip = self.batches_done * self.batch_size
        self.resume_at = None
        for batch in super().__iter__():
            self.batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_at = (int(state["epoch"]), int(state["batches_done"]))


class ResumableDataLoader(SkippingDataLoader, _EpochPositionLoader):
    """The training DataLoader: over a :class:`ResumableSampler`, checkpointed and restored by
    :class:`~mnet_tasks.callbacks.ResumeState` (and ``Stateful`` for Lightning) and, as every loader here,
    without the samples whose files cannot be read (:mod:`mnet_tasks.data.bad_files`)."""


def resumable_loader(
    dataset: Dataset, batch_size: int, trainer: pl.Trainer | None, **kwargs: Any
) -> ResumableDataLoader:
    """The training loader of ``dataset`` (whose ``transform`` has ``set_random_seed``) for this process of
    ``trainer`` (the whole dataset without one), seeded by ``seed_everything``'s seed (``PL_GLOBAL_SEED``, as
    Lightning's own distributed sampler is)."""
    replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    sampler = ResumableSampler(dataset, global_seed(), num_replicas=replicas, rank=rank)
    return ResumableDataLoader(
        SeededSamples(dataset), sampler=sampler, batch_size=batch_size, generator=loader_generator(), **kwargs
    )


def global_seed() -> int:
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def loader_generator() -> torch.Generator:
    """A DataLoader's own generator (it draws its workers' base seed from it): starting an epoch must not draw from
    the global RNG, whose stream (dropout and the like) a resumed run continues from the checkpoint. Without it the
    draws would also depend on the number of workers (persistent workers draw once, in-process loading per epoch).
    """
    return torch.Generator().manual_seed(global_seed())
