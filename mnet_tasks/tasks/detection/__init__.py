"""Object detection (COCO layout): SSD and Faster-RCNN on the shared MobileNetV1."""

from mnet_tasks.tasks.detection.data import CocoDataModule
from mnet_tasks.tasks.detection.module import DetectionTask

__all__ = ["CocoDataModule", "DetectionTask"]
