"""Image classification (ImageNet, any ImageFolder dataset, fine-grained sets): cross-entropy and accuracies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from mnet_tasks.analysis import collects_analysis, label_names, save_analysis
from mnet_tasks.task_module import TaskModule, build_backbone
from mnet_tasks.tasks.classification.analysis import ClassificationErrors, error_analysis


def accuracy_metrics(num_classes: int, mean_class_accuracy: bool = False) -> MetricCollection:
    """Top-1 and top-5 over images; with ``mean_class_accuracy`` also top-1 averaged over classes, the fair number
    when classes have unequal counts (fine-grained test splits)."""
    metrics = {
        "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
        "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
    }
    if mean_class_accuracy:
        metrics["mean_class_accuracy"] = MulticlassAccuracy(num_classes, top_k=1, average="macro")
    return MetricCollection(metrics)


class ClassificationTask(TaskModule):
    """MobileNetV1 with its classifier sized to the data; logs ``{train,val}/{loss,top1,top5}``. With
    ``task.error_analysis``, each validation writes the confusion matrix, the most confused pairs and the most
    confident mistakes to ``analysis/`` (:mod:`mnet_tasks.tasks.classification.analysis`).

    Fine-grained recognition is this module with ``mean_class_accuracy`` on and ``finetune`` options (see
    :class:`~mnet_tasks.task_module.FinetuneOptions`) for a backbone from ``backbone.pretrained``.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        lr_schedule: Mapping[str, Any],
        weight_decay: float = 4e-5,
        label_smoothing: float = 0.0,
        monitor: str = "val/top1",
        monitor_mode: str = "max",
        name: str = "classification",
        native_resolution: int = 224,
        finetune: Mapping[str, Any] | None = None,
        mean_class_accuracy: bool = False,
        normalize: Mapping[str, Sequence[float]] | None = None,
    ):
        super().__init__(
            backbone,
            optimizer,
            lr_schedule,
            weight_decay,
            monitor,
            monitor_mode,
            name,
            native_resolution,
            finetune,
            normalize,
        )
        self.backbone = build_backbone(backbone, num_classes=num_classes)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_metrics = accuracy_metrics(num_classes, mean_class_accuracy).clone(prefix="train/")
        self.val_metrics = accuracy_metrics(num_classes, mean_class_accuracy).clone(prefix="val/")
        self.errors: ClassificationErrors | None = None  # this validation epoch's, when analysed

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.criterion(logits, labels)
        self.train_metrics.update(logits, labels)
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        keep = self.distinct_items(batch_idx, len(batch[0]))  # not DDP's padding repeats
        if keep == 0:
            return
        images, labels = batch[0][:keep], batch[1][:keep]
        logits = self(images)
        self.val_metrics.update(logits, labels)
        self.log("val/loss", self.criterion(logits, labels), sync_dist=True)
        self.log_dict(self.val_metrics, prog_bar=True)
        if self.errors is not None:
            self.errors.update(images, logits, labels)

    def on_validation_epoch_start(self) -> None:
        analysed = collects_analysis(self)
        num_classes = self.backbone.num_classes
        self.errors = ClassificationErrors(num_classes, **self.normalize, device=self.device) if analysed else None

    def on_validation_epoch_end(self) -> None:
        if self.errors is None:
            return
        counts, mistakes = self.errors.gathered()
        if self.trainer.is_global_zero:
            save_analysis(self, *error_analysis(counts, mistakes, label_names(self, self.backbone.num_classes)))
        self.errors = None
