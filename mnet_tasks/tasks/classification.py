"""Image classification (ImageNet, and any ImageFolder dataset): cross-entropy, top-1 and top-5 accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from mnet_tasks.tasks.base import TaskModule, build_backbone


def accuracy_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
        }
    )


class ClassificationTask(TaskModule):
    """MobileNetV1 with its classifier sized to the data; logs ``{train,val}/{loss,top1,top5}``."""

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
    ):
        super().__init__(backbone, optimizer, lr_schedule, weight_decay, monitor, monitor_mode, name, native_resolution)
        self.backbone = build_backbone(backbone, num_classes=num_classes)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_metrics = accuracy_metrics(num_classes).clone(prefix="train/")
        self.val_metrics = accuracy_metrics(num_classes).clone(prefix="val/")

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
        images, labels = batch
        logits = self(images)
        self.val_metrics.update(logits, labels)
        self.log("val/loss", self.criterion(logits, labels), sync_dist=True)
        self.log_dict(self.val_metrics, prog_bar=True)
