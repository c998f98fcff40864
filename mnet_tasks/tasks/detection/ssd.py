"""SSD on MobileNetV1 in the TF Object Detection API layout, assembled from torchvision's SSD."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.ssd import SSD, SSDScoringHead

from mnet_tasks.backbone import ConvBnAct, MobileNetV1, scale_channels
from mnet_tasks.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from mnet_tasks.tasks.detection.anchors import TFDefaultBoxes

# Depths of the four extra layers after Conv2d_13 (before α): each halves the map.
EXTRA_DEPTHS = (512, 256, 256, 128)
# feature_info indices of Conv2d_11 (stride 16) and Conv2d_13 (stride 32).
SSD_FEATURE_INDICES = (3, 4)


class SSDFeatures(nn.Module):
    """Conv2d_11 and Conv2d_13 of a ``features_only`` MobileNetV1, then the extra layers (1x1 to half depth, then
    3x3 stride 2), with the backbone's activation and BN."""

    def __init__(self, body: MobileNetV1, extra_depths: Sequence[int] = EXTRA_DEPTHS):
        super().__init__()
        if not body.features_only or len(body.out_indices) != len(SSD_FEATURE_INDICES):
            raise ValueError(f"SSD needs a features_only MobileNetV1 with out_indices={SSD_FEATURE_INDICES}")
        self.body = body
        act, eps = type(body.stem.act), body.stem.bn.eps
        channels = [body.feature_info[i]["num_chs"] for i in body.out_indices]
        self.extras = nn.ModuleList()
        for depth in extra_depths:
            half, full = scale_channels(depth // 2, body.alpha), scale_channels(depth, body.alpha)
            self.extras.append(
                nn.Sequential(
                    ConvBnAct(channels[-1], half, 1, 1, groups=1, act=act, eps=eps),
                    ConvBnAct(half, full, 3, 2, groups=1, act=act, eps=eps),
                )
            )
            channels.append(full)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = list(self.body(x))
        for extra in self.extras:
            maps.append(extra(maps[-1]))
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


class PointwiseSSDHead(nn.Module):
    """torchvision's SSD head contract with 1x1 box and class predictors (the TF layout) instead of 3x3."""

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int):
        super().__init__()
        classify = nn.ModuleList(
            nn.Conv2d(c, a * num_classes, 1) for c, a in zip(in_channels, num_anchors, strict=True)
        )
        regress = nn.ModuleList(nn.Conv2d(c, a * 4, 1) for c, a in zip(in_channels, num_anchors, strict=True))
        for conv in [*classify, *regress]:
            # Small initial outputs: near-uniform class scores and default boxes, instead of the large logits a
            # Xavier init gives on unbounded ReLU6 features, which cost the first hundreds of steps.
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.classification_head = SSDScoringHead(classify, num_classes)
        self.regression_head = SSDScoringHead(regress, 4)

    def forward(self, x: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"bbox_regression": self.regression_head(x), "cls_logits": self.classification_head(x)}


def build_ssd(
    body: MobileNetV1,
    num_classes: int,
    image_size: int,
    score_thresh: float = 0.01,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
    topk_candidates: int = 400,
) -> SSD:
    """SSD at ``image_size`` (square) over ``num_classes`` object classes (background is added)."""
    features = SSDFeatures(body)
    anchors = TFDefaultBoxes(num_maps=len(features.out_channels))
    head = PointwiseSSDHead(features.out_channels, anchors.num_anchors_per_location(), num_classes + 1)
    return SSD(
        features,
        anchors,
        (image_size, image_size),
        num_classes + 1,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        head=head,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        topk_candidates=topk_candidates,
    )


def ssd_mobilenet_v1(num_classes: int, alpha: float = 1.0, image_size: int = 300, **options: Any) -> SSD:
    """The paper's SSD300 MobileNet as a plain torchvision ``SSD`` (no Lightning, no Hydra), with random weights:
    ``model(images)`` returns the detections in eval mode and the losses for ``(images, targets)`` in train mode,
    as torchvision's detectors do. ``options``: :func:`build_ssd`'s post-processing settings."""
    body = MobileNetV1(num_classes=0, alpha=alpha, features_only=True, out_indices=SSD_FEATURE_INDICES)
    return build_ssd(body, num_classes, image_size, **options)
