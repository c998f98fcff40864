"""Object detection (COCO layout): SSD and Faster-RCNN on the shared MobileNetV1."""

from mnet_tasks.tasks.detection.data import CocoDataModule
from mnet_tasks.tasks.detection.module import DetectionTask
from mnet_tasks.tasks.detection.ssd import ssd_mobilenet_v1

__all__ = ["CocoDataModule", "DetectionTask", "ssd_mobilenet_v1"]
