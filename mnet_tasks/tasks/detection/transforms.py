"""The detection pipeline: bbox-safe augmentation to a ``[0, 1]`` float tensor (the detectors normalise)."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
from albumentations.pytorch import ToTensorV2


def detection_transform(
    image_size: int,
    train: bool,
    square: bool = True,
    crop_prob: float = 0.5,
    crop_scale: Sequence[float] = (0.3, 1.0),
    min_visibility: float = 0.3,
) -> A.Compose:
    """Bbox-safe detection pipeline to a ``[0, 1]`` float CHW tensor; the detectors normalise themselves.

    Boxes are ``pascal_voc`` (x0, y0, x1, y1 pixels) with a ``labels`` field. ``square`` (SSD): resize to
    ``image_size``, in training after an SSD-style random zoom-in crop (aspect 1/2 to 2) with probability
    ``crop_prob``; boxes cut to less than ``min_visibility`` of their area are dropped. Otherwise (Faster-RCNN)
    the size is left to the detector, which resizes keeping the aspect ratio. Training adds a horizontal flip
    and colour jitter.
    """
    steps = []
    if square and train and crop_prob > 0:
        crop = A.RandomResizedCrop(
            size=(image_size, image_size), scale=tuple(crop_scale), ratio=(0.5, 2.0), p=crop_prob
        )
        steps.append(A.OneOf([crop, A.Resize(image_size, image_size, p=1 - crop_prob)], p=1.0))
    elif square:
        steps.append(A.Resize(image_size, image_size))
    if train:
        steps += [A.HorizontalFlip(p=0.5), A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8)]
    steps += [A.ToFloat(max_value=255.0), ToTensorV2()]
    boxes = A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        min_visibility=min_visibility,
        min_width=1,
        min_height=1,
        clip=True,
    )
    return A.Compose(steps, bbox_params=boxes)
