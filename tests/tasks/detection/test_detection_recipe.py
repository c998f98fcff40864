"""The parts of the TF Object Detection API's recipe offered as options: sigmoid classification with its
hard-negative mining, ssd_random_crop, SSD's min_depth and Faster-RCNN's frozen BatchNorm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from mnet_tasks.backbone import MobileNetV1
from mnet_tasks.config import compose_config
from mnet_tasks.task_module import build_task, is_batchnorm
from mnet_tasks.tasks.detection.ssd import SigmoidSSD, anchor_labels, mined_classification_loss, ssd_mobilenet_v1
from mnet_tasks.tasks.detection.transforms import SSD_MIN_COVERED, SSDRandomCrop, detection_transform, kept_fraction


def one_box_targets() -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0], [70.0, 30.0, 120.0, 100.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},  # background only
    ]


def test_hard_negative_mining_by_hand():
    per_anchor = torch.tensor([[5.0, 1.0, 3.0, 2.0, 0.5], [4.0, 6.0, 0.1, 0.2, 0.3]])
    labels = torch.tensor([[0, 2, 0, 0, 0], [0, 0, 0, 0, 0]])
    # image 0: its one positive (1.0) and its three hardest negatives (5, 3, 2); image 1 has no positive, no negative
    assert mined_classification_loss(per_anchor, labels, neg_to_pos_ratio=3) == pytest.approx(11.0)


def test_the_mining_reproduces_torchvisions_softmax_loss():
    torch.manual_seed(0)
    model = ssd_mobilenet_v1(3, alpha=0.25, image_size=128).train()
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    losses, captured = {}, {}

    def compute_loss(targets, head_outputs, anchors, matched_idxs):
        captured.update(targets=targets, head_outputs=head_outputs, matched_idxs=matched_idxs)
        losses.update(type(model).compute_loss(model, targets, head_outputs, anchors, matched_idxs))
        return losses

    model.compute_loss = compute_loss
    model(images, one_box_targets())
    labels = torch.stack(
        [anchor_labels(t["labels"], m) for t, m in zip(captured["targets"], captured["matched_idxs"], strict=True)]
    )
    logits = captured["head_outputs"]["cls_logits"]
    per_anchor = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    torch.testing.assert_close(mined_classification_loss(per_anchor, labels, 3), losses["classification"])


def test_sigmoid_ssd_trains_on_per_class_bce_and_scores_by_sigmoid():
    torch.manual_seed(0)
    model = ssd_mobilenet_v1(3, alpha=0.25, image_size=128, classification="sigmoid")
    assert isinstance(model, SigmoidSSD)
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    losses = model.train()(images, one_box_targets())
    assert set(losses) == {"bbox_regression", "classification"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()

    model.eval()
    with torch.no_grad():
        detections = model(images[:1])
        batch, _ = model.transform(images[:1])
        logits = model.head(list(model.backbone(batch.tensors).values()))["cls_logits"]
    best = torch.sigmoid(logits)[0, :, 1:].max()  # the best object score of any anchor survives NMS
    assert detections[0]["scores"].max() == pytest.approx(best.item(), abs=1e-6)
    assert ((detections[0]["labels"] >= 1) & (detections[0]["labels"] <= 3)).all()
    with pytest.raises(ValueError, match=r"task.detector.classification must be one of \('softmax', 'sigmoid'\)"):
        ssd_mobilenet_v1(3, alpha=0.25, image_size=128, classification="focal")


def test_kept_fraction_is_intersection_over_box_area():
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 40.0]])
    np.testing.assert_allclose(kept_fraction(boxes, (5, 0, 100, 100)), [0.5, 1.0])
    np.testing.assert_allclose(kept_fraction(boxes, (50, 50, 60, 60)), [0.0, 0.0])


def test_ssd_random_crop_draws_the_tf_ranges_and_keeps_the_boxes_that_cover_the_drawn_fraction():
    crop = SSDRandomCrop(64)
    height, width = 200, 300
    boxes = np.array([[10, 10, 60, 80], [150, 100, 290, 190], [100, 20, 140, 60]], dtype=float)
    normalised = np.hstack([boxes / [width, height, width, height], np.zeros((3, 1))])  # a label column
    whole = draws = 0
    covered = set()
    for seed in range(400):
        crop.set_random_seed(seed)
        params = crop.get_params_dependent_on_data({"shape": (height, width, 3)}, {"bboxes": normalised})
        x0, y0, x1, y1 = params["crop_coords"]
        if (x0, y0, x1, y1) == (0, 0, width, height):
            whole += 1
            continue
        draws += 1
        covered.add(params["min_kept"])
        area = (x1 - x0) * (y1 - y0) / (width * height)
        assert 0.1 - 0.01 <= area <= 1.0 and 0.5 - 0.02 <= (x1 - x0) / (y1 - y0) <= 2.0 + 0.05
        fractions = kept_fraction(boxes, params["crop_coords"])
        assert fractions.max() >= params["min_kept"]  # the crop covers the drawn share of some box
        kept = crop.apply_to_bboxes(normalised, **params, shape=(height, width))
        expected = fractions >= params["min_kept"] if params["min_kept"] > 0 else fractions > 0
        assert len(kept) == expected.sum()
    assert covered == set(SSD_MIN_COVERED) and 0.08 < whole / 400 < 0.3  # 15% kept whole, plus failed draws


def test_detection_pipeline_refuses_an_unknown_crop_naming_the_key():
    with pytest.raises(ValueError, match=r"data\.crop must be one of none, zoom, ssd, got 'random'"):
        detection_transform(64, train=True, crop="random")
    with pytest.raises(Exception, match=r"data\.crop must be one of none, zoom, ssd, got 'random'"):
        instantiate(compose_config(["task=detection", "data.crop=random"]).data)  # before any data is read


def test_min_depth_16_widens_only_the_layers_under_16_channels():
    thin, tf = MobileNetV1(alpha=0.25), MobileNetV1(alpha=0.25, min_depth=16)
    widths = [m.out_channels for m in thin.modules() if isinstance(m, torch.nn.Conv2d)]
    tf_widths = [m.out_channels for m in tf.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths[:3] == [8, 8, 16] and tf_widths[:3] == [16, 16, 16] and widths[3:] == tf_widths[3:]
    cfg = compose_config(["task=detection", "backbone.alpha=0.25", "backbone.min_depth=16"])
    ssd = build_task(cfg, num_classes=3, category_ids=[1, 2, 3], category_names=["a", "b", "c"]).detector
    assert ssd.backbone.body.stem.conv.out_channels == 16


def test_faster_rcnn_with_frozen_bn_keeps_the_backbones_statistics_and_trains_the_rest():
    cfg = compose_config(
        ["task=detection_frcnn", "backbone.alpha=0.25", "backbone.resolution=128", "+task.finetune.freeze_bn=true"]
    )
    task = build_task(cfg, num_classes=3).train()
    task.on_train_epoch_start = lambda: None  # outside a Trainer
    task.set_backbone_requires_grad(frozen=False)
    backbone_bn = [m for m in task.backbone_body() if is_batchnorm(m)]
    assert len(backbone_bn) == 27  # every MobileNetV1 layer, the box head's Conv2d_12-13 included
    assert all(not m.training and not any(p.requires_grad for p in m.parameters()) for m in backbone_bn)
    statistics = [m.running_mean.clone() for m in backbone_bn]
    images = [torch.rand(3, 128, 160), torch.rand(3, 128, 128)]
    sum(task.detector(images, one_box_targets()).values()).backward()
    assert all(torch.equal(m.running_mean, s) for m, s in zip(backbone_bn, statistics, strict=True))
    assert task.detector.rpn.head.conv[0][0].weight.grad is not None  # the detector's own layers learn
