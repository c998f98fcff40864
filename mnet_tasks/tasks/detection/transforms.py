"""The detection pipeline: bbox-safe augmentation to a uint8 CHW tensor (the task module makes it ``[0, 1]`` float
on the device, the detectors normalise)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
from albumentations.pytorch import ToTensorV2

from mnet_tasks.data.transforms import ColorTwist

# The TF Object Detection API's ssd_random_crop: one of these minimum covered fractions (of some box) is drawn per
# image, and it is also the share of its area a box must keep to stay in the crop.
SSD_MIN_COVERED = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
TRAIN_CROPS = ("none", "zoom", "ssd")


class SSDRandomCrop(A.RandomSizedBBoxSafeCrop):
    """The TF Object Detection API's ``ssd_random_crop``, resized to ``size``.

    Per image: with probability ``keep_prob`` the whole image; otherwise a covered fraction ``c`` is drawn from
    :data:`SSD_MIN_COVERED`, and up to ``attempts`` crops of ``area`` (share of the image) and ``aspect``
    (width / height) are drawn until one covers at least ``c`` of some box (``c = 0``: the first fits); without
    boxes or a fitting crop, the whole image. Boxes that keep less than ``c`` of their area (nothing, for
    ``c = 0``) leave the crop, the rest are clipped to it.
    """

    def __init__(
        self,
        size: int,
        area: Sequence[float] = (0.1, 1.0),
        aspect: Sequence[float] = (0.5, 2.0),
        keep_prob: float = 0.15,
        attempts: int = 100,
        p: float = 1.0,
    ):
        super().__init__(height=size, width=size, p=p)
        self.area, self.aspect = tuple(area), tuple(aspect)
        self.keep_prob, self.attempts = keep_prob, attempts

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        whole = {"crop_coords": (0, 0, width, height), "min_kept": 0.0}
        if self.py_random.random() < self.keep_prob:
            return whole
        min_covered = self.py_random.choice(SSD_MIN_COVERED)
        boxes = np.asarray(data["bboxes"])[:, :4] * [width, height, width, height] if len(data["bboxes"]) else None
        for _ in range(self.attempts):
            area = self.py_random.uniform(*self.area) * width * height
            aspect = math.exp(self.py_random.uniform(*np.log(self.aspect)))
            crop_w, crop_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if not (0 < crop_w <= width and 0 < crop_h <= height):
                continue
            x0, y0 = self.py_random.randint(0, width - crop_w), self.py_random.randint(0, height - crop_h)
            crop = (x0, y0, x0 + crop_w, y0 + crop_h)
            if min_covered == 0 or (boxes is not None and kept_fraction(boxes, crop).max() >= min_covered):
                return {"crop_coords": crop, "min_kept": min_covered}
        return whole

    def apply_to_bboxes(self, bboxes: np.ndarray, crop_coords: tuple[int, ...], min_kept: float, **params: Any):
        if len(bboxes):
            height, width = params["shape"][:2]
            kept = kept_fraction(bboxes[:, :4] * [width, height, width, height], crop_coords)
            bboxes = bboxes[kept >= min_kept] if min_kept > 0 else bboxes[kept > 0]
        return super().apply_to_bboxes(bboxes, crop_coords, **params)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "area", "aspect", "keep_prob", "attempts")


def kept_fraction(boxes: np.ndarray, crop: Sequence[float]) -> np.ndarray:
    """The share of each box's area (x0, y0, x1, y1 rows) inside ``crop`` (intersection over the box's area)."""
    inter_w = np.clip(np.minimum(boxes[:, 2], crop[2]) - np.maximum(boxes[:, 0], crop[0]), 0, None)
    inter_h = np.clip(np.minimum(boxes[:, 3], crop[3]) - np.maximum(boxes[:, 1], crop[1]), 0, None)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter_w * inter_h / np.maximum(areas, 1e-9)


def check_crop(crop: str) -> None:
    if crop not in TRAIN_CROPS:
        raise ValueError(f"data.crop must be one of {', '.join(TRAIN_CROPS)}, got {crop!r}")


def detection_transform(
    image_size: int,
    train: bool,
    square: bool = True,
    crop: str = "none",
    color_jitter: bool = True,
    zoom_prob: float = 0.5,
    zoom_scale: Sequence[float] = (0.3, 1.0),
    min_visibility: float = 0.3,
) -> A.Compose:
    """Bbox-safe detection pipeline to a uint8 CHW tensor; the detectors normalise themselves.

    Boxes are ``pascal_voc`` (x0, y0, x1, y1 pixels) with a ``labels`` field. ``square`` (SSD): resize to
    ``image_size``, in training after the ``crop``: ``zoom``, with probability ``zoom_prob``, a random crop of
    ``zoom_scale`` of the area and aspect 1/2 to 2 that drops boxes left with less than ``min_visibility`` of their
    area; ``ssd``, the TF Object Detection API's ``ssd_random_crop`` (:class:`SSDRandomCrop`, which sets its own
    box rule); ``none``. Otherwise (Faster-RCNN) the size is left to the detector, which resizes keeping the aspect
    ratio. Training adds a horizontal flip and, with ``color_jitter``, colour jitter.
    """
    check_crop(crop)
    steps = []
    if square and train and crop == "zoom":
        zoom = A.RandomResizedCrop(
            size=(image_size, image_size), scale=tuple(zoom_scale), ratio=(0.5, 2.0), p=zoom_prob
        )
        steps.append(A.OneOf([zoom, A.Resize(image_size, image_size, p=1 - zoom_prob)], p=1.0))
    elif square and train and crop == "ssd":
        steps.append(SSDRandomCrop(image_size))
        min_visibility = 0.0  # the crop keeps or drops each box itself
    elif square:
        steps.append(A.Resize(image_size, image_size))
    if train:
        steps.append(A.HorizontalFlip(p=0.5))
        if color_jitter:
            steps.append(ColorTwist(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8))
    steps.append(ToTensorV2())
    boxes = A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        min_visibility=min_visibility,
        min_width=1,
        min_height=1,
        clip=True,
    )
    return A.Compose(steps, bbox_params=boxes)
