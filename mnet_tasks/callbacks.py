"""Callbacks that turn a run into data on disk."""

from __future__ import annotations

import pytorch_lightning as pl


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
