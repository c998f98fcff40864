"""Albumentations pipelines that turn an HxWx3 uint8 image into a normalised CHW float tensor."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
from albumentations.pytorch import ToTensorV2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(
    image_size: int,
    scale: Sequence[float] = (0.25, 1.0),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """Random crop, flip and mild colour jitter.

    The crop keeps at least 25% of the area by default (Inception uses 8%) because a small
    MobileNet trained briefly underfits rather than overfits under heavy cropping.
    """
    size = (image_size, image_size)
    return A.Compose(
        [
            A.RandomResizedCrop(size=size, scale=tuple(scale), area_for_downscale="image"),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8),
            A.Normalize(mean=tuple(mean), std=tuple(std)),
            ToTensorV2(),
        ]
    )


def eval_transform(
    image_size: int,
    crop_pct: float = 0.875,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """Resize the shorter side to ``image_size / crop_pct``, then centre-crop (224 out of 256 by default)."""
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return A.Compose(
        [
            A.SmallestMaxSize(max_size=round(image_size / crop_pct), area_for_downscale="image"),
            A.CenterCrop(height=image_size, width=image_size),
            A.Normalize(mean=tuple(mean), std=tuple(std)),
            ToTensorV2(),
        ]
    )
