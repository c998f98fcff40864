"""Scene classification with a two-layer head on the shared MobileNetV1: a complete mnet_tasks plug-in task."""

import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from mnet_tasks.task_module import TaskModule, build_backbone


class SceneTask(TaskModule):
    def __init__(
        self,
        num_classes,
        backbone,
        optimizer,
        lr_schedule,
        weight_decay,
        monitor,
        monitor_mode,
        name,
        native_resolution,
        hidden=128,
    ):
        super().__init__(backbone, optimizer, lr_schedule, weight_decay, monitor, monitor_mode, name, native_resolution)
        self.backbone = build_backbone(backbone, num_classes=0)  # pooled features out
        self.head = nn.Sequential(
            nn.Linear(self.backbone.num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )
        self.accuracy = MulticlassAccuracy(num_classes)

    def forward(self, images):
        return self.head(self.backbone(images))

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = F.cross_entropy(self(images), labels)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        self.accuracy(self(images), labels)
        self.log("val/accuracy", self.accuracy)
