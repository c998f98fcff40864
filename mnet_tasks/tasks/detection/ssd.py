"""SSD on MobileNetV1 in the TF Object Detection API layout, assembled from torchvision's SSD."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.ssd import SSD, SSDScoringHead
from torchvision.ops import boxes as box_ops

from mnet_tasks.backbone import ConvBnAct, MobileNetV1, scale_channels
from mnet_tasks.tasks.detection.anchors import TFDefaultBoxes
from mnet_tasks.weights import IMAGENET_NORMALIZE

# Depths of the four extra layers after Conv2d_13 (before α): each halves the map.
EXTRA_DEPTHS = (512, 256, 256, 128)
# feature_info indices of Conv2d_11 (stride 16) and Conv2d_13 (stride 32).
SSD_FEATURE_INDICES = (3, 4)
CLASSIFICATIONS = ("softmax", "sigmoid")


class SSDFeatures(nn.Module):
    """Conv2d_11 and Conv2d_13 of a ``features_only`` MobileNetV1, then the extra layers (1x1 to half depth, then
    3x3 stride 2), with the backbone's activation and BN."""

    def __init__(self, body: MobileNetV1, extra_depths: Sequence[int] = EXTRA_DEPTHS):
        super().__init__()
        if not body.features_only or len(body.out_indices) != len(SSD_FEATURE_INDICES):
            raise ValueError(f"SSD needs a features_only MobileNetV1 with out_indices={SSD_FEATURE_INDICES}")
        self.body = body
        act, eps, min_depth = type(body.stem.act), body.stem.bn.eps, body.min_depth
        channels = [body.feature_info[i]["num_chs"] for i in body.out_indices]
        self.extras = nn.ModuleList()
        for depth in extra_depths:
            half, full = (scale_channels(d, body.alpha, min_depth) for d in (depth // 2, depth))
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


def mined_classification_loss(per_anchor: torch.Tensor, labels: torch.Tensor, neg_to_pos_ratio: int) -> torch.Tensor:
    """SSD's hard-negative mining, as torchvision's ``SSD.compute_loss`` does it: the loss of every matched anchor
    and of the ``neg_to_pos_ratio`` times as many highest-loss background anchors per image, over the matches.
    ``per_anchor`` and ``labels`` (0: background) are ``(images, anchors)``."""
    foreground = labels > 0
    negatives = neg_to_pos_ratio * foreground.sum(1, keepdim=True)
    background_loss = per_anchor.detach().masked_fill(foreground, -float("inf"))
    rank = background_loss.argsort(1, descending=True).argsort(1)
    hardest = rank < negatives
    return (per_anchor[foreground].sum() + per_anchor[hardest].sum()) / max(1, int(foreground.sum()))


class SigmoidSSD(SSD):
    """torchvision's SSD with the TF Object Detection API's classification: every class, background included,
    gets its own sigmoid, trained by binary cross-entropy on one-hot targets with the same hard-negative mining,
    and the detections are scored by those sigmoids (TF's ``weighted_sigmoid`` loss and SIGMOID score converter)
    instead of a softmax over the classes."""

    def compute_loss(
        self,
        targets: list[dict[str, torch.Tensor]],
        head_outputs: dict[str, torch.Tensor],
        anchors: list[torch.Tensor],
        matched_idxs: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        losses = super().compute_loss(targets, head_outputs, anchors, matched_idxs)  # its box loss is kept
        labels = torch.stack(
            [anchor_labels(t["labels"], matched) for t, matched in zip(targets, matched_idxs, strict=True)]
        )
        logits = head_outputs["cls_logits"]
        one_hot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        per_anchor = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none").sum(-1)
        losses["classification"] = mined_classification_loss(per_anchor, labels, self.neg_to_pos_ratio)
        return losses

    def postprocess_detections(
        self,
        head_outputs: dict[str, torch.Tensor],
        image_anchors: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        """torchvision's steps on sigmoid scores: per class, the scores above ``score_thresh``, their top
        ``topk_candidates``; then NMS per class and the ``detections_per_img`` best."""
        detections = []
        scores = torch.sigmoid(head_outputs["cls_logits"])
        for deltas, image_scores, anchors, shape in zip(
            head_outputs["bbox_regression"], scores, image_anchors, image_shapes, strict=True
        ):
            boxes = box_ops.clip_boxes_to_image(self.box_coder.decode_single(deltas, anchors), shape)
            kept_boxes, kept_scores, kept_labels = [], [], []
            for label in range(1, image_scores.shape[-1]):
                score = image_scores[:, label]
                above = score > self.score_thresh
                score, order = score[above].topk(det_utils._topk_min(score[above], self.topk_candidates, 0))
                kept_boxes.append(boxes[above][order])
                kept_scores.append(score)
                kept_labels.append(torch.full_like(order, label))
            boxes, score, labels = torch.cat(kept_boxes), torch.cat(kept_scores), torch.cat(kept_labels)
            keep = box_ops.batched_nms(boxes, score, labels, self.nms_thresh)[: self.detections_per_img]
            detections.append({"boxes": boxes[keep], "scores": score[keep], "labels": labels[keep]})
        return detections


def anchor_labels(labels: torch.Tensor, matched: torch.Tensor) -> torch.Tensor:
    """Each anchor's class (0: background) from its matched box index (-1 and -2: unmatched)."""
    classes = torch.zeros_like(matched)
    foreground = matched >= 0
    classes[foreground] = labels[matched[foreground]]
    return classes


def build_ssd(
    body: MobileNetV1,
    num_classes: int,
    image_size: int,
    classification: str = "softmax",
    normalize: Mapping[str, Sequence[float]] | None = None,
    score_thresh: float = 0.01,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
    topk_candidates: int = 400,
) -> SSD:
    """SSD at ``image_size`` (square) over ``num_classes`` object classes (background is added); ``classification``
    ``softmax`` (torchvision's) or ``sigmoid`` (the TF Object Detection API's, :class:`SigmoidSSD`); the images are
    normalised by ``normalize``'s ``mean`` and ``std`` (ImageNet's by default)."""
    if classification not in CLASSIFICATIONS:
        raise ValueError(f"task.detector.classification must be one of {CLASSIFICATIONS}, got {classification!r}")
    normalize = normalize or IMAGENET_NORMALIZE
    features = SSDFeatures(body)
    anchors = TFDefaultBoxes(num_maps=len(features.out_channels))
    head = PointwiseSSDHead(features.out_channels, anchors.num_anchors_per_location(), num_classes + 1)
    return (SigmoidSSD if classification == "sigmoid" else SSD)(
        features,
        anchors,
        (image_size, image_size),
        num_classes + 1,
        image_mean=list(normalize["mean"]),
        image_std=list(normalize["std"]),
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
