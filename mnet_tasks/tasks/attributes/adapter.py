"""Exporting, running and scoring a face-attribute model: one sigmoid head, a probability per named attribute."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mnet_tasks.adapter import PRESENT_THRESHOLD, BrowseSample, TaskAdapter
from mnet_tasks.model_card import Head, ModelCard
from mnet_tasks.task_module import TaskModule


class AttributesAdapter(TaskAdapter):
    """Face attributes: one sigmoid head, a probability per named attribute."""

    activation = "sigmoid"
    metric = "mean_accuracy"  # over attributes, at probability 0.5, as val/mean_accuracy

    def rebuild_kwargs(self, cls: type[TaskModule], hparams: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().rebuild_kwargs(cls, hparams), "teacher": None}  # the teacher only mattered for training

    def heads(self, hparams: Mapping[str, Any]) -> list[Head]:
        names = list(hparams["attribute_names"])
        return [Head("attributes", len(names), labels=names)]

    def images_and_targets(self, batch: Any, card: ModelCard) -> tuple[torch.Tensor, np.ndarray]:
        targets = batch["target"].numpy().copy()
        targets[~batch["labeled"].numpy()] = np.nan  # unlabeled images are not scored
        return batch["image"], targets

    def score(self, probabilities: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
        labeled = ~np.isnan(targets).any(1)
        correct = (probabilities[labeled] >= PRESENT_THRESHOLD) == (targets[labeled] == 1)
        return float(correct.mean(1).sum()), int(labeled.sum())

    def decisions(self, probabilities: np.ndarray) -> np.ndarray:
        return probabilities >= PRESENT_THRESHOLD

    def browse_samples(self, batch: Any, datamodule: Any) -> list[BrowseSample]:
        """Each face with the names of its present attributes (``unlabeled`` for a face without labels)."""
        names = datamodule.head_kwargs()["attribute_names"]
        samples = []
        for image, target, labeled in zip(batch["image"], batch["target"], batch["labeled"].tolist(), strict=True):
            present = [name for name, value in zip(names, target.tolist(), strict=True) if value == 1]
            caption = (", ".join(present) or "no attribute present") if labeled else "unlabeled"
            samples.append(BrowseSample(image, [caption]))
        return samples
