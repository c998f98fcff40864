"""Callbacks that turn a run into data on disk."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from mnet_tasks.data.resumable import ResumableDataLoader
from mnet_tasks.loggers import ResumableCSVLogger

RESUME_STATE_KEY = "mnet_tasks_resume_state"  # this callback's entry in a checkpoint


class ValidationHistory(pl.Callback):
    """Keeps each validation epoch's metrics so metrics.json can report the final and the best epoch."""

    def __init__(self, monitor: str, mode: str):
        if mode not in ("max", "min"):
            raise ValueError(f"task.monitor_mode must be 'max' or 'min', got {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.epochs: list[tuple[int, dict[str, float]]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After every epoch-end hook, the module's included (metrics computed over the whole epoch, e.g. COCOeval).
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.epochs.append((trainer.current_epoch, metrics))

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints, so that a resumed run's metrics.json still knows the epochs before it."""
        return {"epochs": [[epoch, metrics] for epoch, metrics in self.epochs]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = [(int(epoch), dict(metrics)) for epoch, metrics in state_dict["epochs"]]

    @property
    def final(self) -> dict[str, float]:
        return self.epochs[-1][1] if self.epochs else {}

    def _best(self) -> tuple[int, dict[str, float]] | None:
        scored = [(epoch, m) for epoch, m in self.epochs if self.monitor in m]
        if not scored:
            return None
        pick = max if self.mode == "max" else min
        return pick(scored, key=lambda item: item[1][self.monitor])

    @property
    def best(self) -> dict[str, float]:
        best = self._best()
        return best[1] if best else {}

    @property
    def best_epoch(self) -> int | None:
        best = self._best()
        return best[0] if best else None


class ResumeState(pl.Callback):
    """What a checkpoint needs, beyond Lightning's own state, for a resumed run to go on as if it had not stopped:
    the global random generators (torch, CUDA, numpy, python: dropout and any other draw) and how far the training
    DataLoader is into its epoch (:class:`~mnet_tasks.data.resumable.ResumableDataLoader`).

    Both are set back when training starts: after the sanity check, before the first batch is drawn; then too the
    CSV log drops what the interrupted run logged after the checkpoint (:mod:`mnet_tasks.loggers`). (Lightning
    restores a stateful loader itself only if no ``estimated_stepping_batches`` built it before the restore, and
    the lr schedules here need that number.) Kept as plain lists and tensors: checkpoints load ``weights_only``.
    """

    def __init__(self) -> None:
        self.loaded: dict[str, Any] | None = None

    @staticmethod
    def _resumable_loaders(trainer: pl.Trainer) -> list[ResumableDataLoader]:
        loaders = trainer.train_dataloader  # one loader, or a list or dict of them
        if isinstance(loaders, dict):
            loaders = list(loaders.values())
        return [
            loader
            for loader in (loaders if isinstance(loaders, list) else [loaders])
            if isinstance(loader, ResumableDataLoader)
        ]

    @staticmethod
    def _trained_position(trainer: pl.Trainer, loader: ResumableDataLoader) -> dict[str, int]:
        """The loader's position less the batches it handed to the loop that were not trained yet: a checkpoint
        written when training stops (Ctrl-C, an error) can fall between fetching a batch and training on it."""
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        state = loader.state_dict()
        return {**state, "batches_done": state["batches_done"] - (progress.ready - progress.processed)}

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        positions = [self._trained_position(trainer, loader) for loader in self._resumable_loaders(trainer)]
        checkpoint[RESUME_STATE_KEY] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, keys.tolist(), position, has_gauss, cached_gaussian],
            "python": random.getstate(),
            "train_loaders": positions,
        }
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        # Lightning saves the loaders' own state too, and may restore from it: the same position there.
        if len(fit_loop.get("state_dict", {}).get("combined_loader", [])) == len(positions):
            fit_loop["state_dict"]["combined_loader"] = positions
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        if trainer.interrupted and progress.ready > progress.processed and "epoch_loop.state_dict" in fit_loop:
            # Saved between fetching a batch and training it, after the last batch's logging step was counted:
            # Lightning counts it again on restart, as for its own checkpoints written before that count.
            fit_loop["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self.loaded = checkpoint.get(RESUME_STATE_KEY)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, self.loaded = self.loaded, None
        # A resumed run keeps the log up to its checkpoint (what came after is logged again); a fresh run in a
        # folder that holds an old log starts it afresh.
        kept_step = trainer.global_step if state is not None else -1
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger) and trainer.is_global_zero:
                logger.drop_rows_after(kept_step)
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
        for loader, loader_state in zip(self._resumable_loaders(trainer), state["train_loaders"], strict=False):
            loader.load_state_dict(loader_state)


def batch_images(batch: Any) -> int:
    """The number of images in a batch: its first tensor's or list's length, whatever the task's batch layout."""
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return len(first)


class TrainingThroughput(pl.Callback):
    """Images per second of each training epoch, validation excluded (from the epoch's start to its last batch,
    waits for the loader included), logged as ``train/images_per_s``; ``epochs`` keeps every epoch's value for
    ``metrics.json``."""

    def __init__(self) -> None:
        self.epochs: list[float] = []
        self.images, self.start, self.end = 0, 0.0, 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.images, self.start = 0, time.perf_counter()
        self.end = self.start

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        self.images += batch_images(batch)
        self.end = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.images and self.end > self.start:
            self.epochs.append(self.images / (self.end - self.start))
            pl_module.log("train/images_per_s", self.epochs[-1], on_epoch=True)

    @property
    def median(self) -> float | None:
        """Over the epochs after the first (which starts the loader's workers), or the first if it is the only one."""
        timed = self.epochs[1:] or self.epochs
        return statistics.median(timed) if timed else None


class TrainingSpeed(pl.Callback):
    """The trainer's speed keys, applied to the module before it runs: ``trainer.channels_last`` (the network's
    weights and, through :attr:`TaskModule.memory_format <mnet_tasks.task_module.TaskModule.memory_format>`, its
    input batches in the channels_last layout, which the depthwise and 1x1 convolutions run faster in on CPU and
    GPU) and ``trainer.compile`` (``torch.compile`` of each network of the module, with these options; false: off).
    """

    def __init__(self, channels_last: bool = True, compile: bool | dict[str, Any] = False) -> None:
        if not isinstance(channels_last, bool):
            raise ValueError(f"trainer.channels_last must be true or false, got {channels_last!r}")
        if not isinstance(compile, (bool, dict)):
            raise ValueError(
                f"trainer.compile must be true, false or a mapping of torch.compile options, got {compile!r}"
            )
        self.channels_last, self.compile = channels_last, compile

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        pl_module.to(memory_format=memory_format)
        pl_module.memory_format = memory_format
        if self.compile is not False:
            options = {} if self.compile is True else dict(self.compile)
            for child in pl_module.children():  # the networks; metrics and losses hold no parameters
                if next(child.parameters(), None) is not None:
                    child.compile(**options)
