"""Faster-RCNN on MobileNetV1 in the TF Object Detection API layout, assembled from torchvision's FasterRCNN.

The RPN reads Conv2d_11 (stride 16); the box classifier runs the backbone's own Conv2d_12 and Conv2d_13 on 14x14
crops of each proposal, so the whole ImageNet-trained network is used and the second stage is where the cost is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from mnet_tasks.backbone import MobileNetV1
from mnet_tasks.tasks.detection.anchors import rpn_anchors
from mnet_tasks.weights import IMAGENET_NORMALIZE

RPN_STAGE = 3  # feature_info index of Conv2d_11, stride 16
CROP_SIZE = 14


class Trunk(nn.Sequential):
    """Stem to Conv2d_11: the features the RPN and the RoI crops read."""

    def __init__(self, body: MobileNetV1):
        last = body.stage_ends[RPN_STAGE]
        super().__init__(body.stem, *body.blocks[: last + 1])
        self.out_channels = body.feature_info[RPN_STAGE]["num_chs"]


class ProposalHead(nn.Module):
    """Conv2d_12 (stride 2: 14x14 crops become 7x7) and Conv2d_13, then global average pooling."""

    def __init__(self, body: MobileNetV1):
        super().__init__()
        self.blocks = nn.Sequential(*body.blocks[body.stage_ends[RPN_STAGE] + 1 :])
        self.out_channels = body.num_features

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.blocks(crops).mean((2, 3))


def build_faster_rcnn(
    body: MobileNetV1,
    num_classes: int,
    image_size: int,
    max_size_ratio: float = 1024 / 600,
    anchor_scales: Sequence[float] = (0.25 * 256 / 600, 0.5 * 256 / 600, 256 / 600, 2 * 256 / 600),
    anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    proposals: int = 300,
    box_batch_size_per_image: int = 64,
    score_thresh: float = 0.01,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
    normalize: Mapping[str, Sequence[float]] | None = None,
) -> FasterRCNN:
    """Faster-RCNN whose images are resized to a shorter side of ``image_size`` (longer side capped at
    ``max_size_ratio`` times that), with ``proposals`` RPN proposals per image in training and at test time,
    normalised by ``normalize``'s ``mean`` and ``std`` (ImageNet's by default)."""
    normalize = normalize or IMAGENET_NORMALIZE
    if body.features_only or len(body.blocks) <= body.stage_ends[RPN_STAGE] + 1:
        raise ValueError("Faster-RCNN needs the whole MobileNetV1 (not features_only): its box head is Conv2d_12-13")
    head = ProposalHead(body)
    return FasterRCNN(
        Trunk(body),
        num_classes=None,
        min_size=image_size,
        max_size=round(image_size * max_size_ratio),
        image_mean=list(normalize["mean"]),
        image_std=list(normalize["std"]),
        rpn_anchor_generator=rpn_anchors(image_size, anchor_scales, anchor_ratios),
        rpn_pre_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_train=proposals,
        rpn_post_nms_top_n_test=proposals,
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=CROP_SIZE, sampling_ratio=2),
        box_head=head,
        box_predictor=FastRCNNPredictor(head.out_channels, num_classes + 1),
        box_score_thresh=score_thresh,
        box_nms_thresh=nms_thresh,
        box_detections_per_img=detections_per_img,
        box_batch_size_per_image=box_batch_size_per_image,
    )
