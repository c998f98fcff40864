"""mnet_tasks: one MobileNetV1 backbone (α, ρ) serving many vision tasks."""

from mnet_tasks.backbone import MobileNetV1, scale_channels
from mnet_tasks.weights import load_pretrained

__all__ = ["MobileNetV1", "load_pretrained", "scale_channels"]
