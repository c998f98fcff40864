"""Albumentations pipelines from an HxWx3 uint8 image to a CHW uint8 tensor, and the normalisation that follows on
the batch, on the device (:func:`normalize_images`).

The loader workers keep images uint8: a float32 image is 4x the bytes to normalise, pickle between processes, pin
and copy to the device, and the per-image normalisation was a tenth of a worker's time. The task module turns the
batch into float and normalises it in one pass where the model runs (``TaskModule.prepare_images``), as timm's
prefetcher does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ITU-R 601 luma weights (torchvision's rgb_to_grayscale) and the RGB <-> YIQ matrices the hue rotation works in.
LUMA = np.array([0.299, 0.587, 0.114])
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


class ColorTwist(A.ImageOnlyTransform):
    """Brightness, contrast, saturation and hue jitter, in random order, as one affine colour map.

    Each adjustment is affine in RGB: brightness scales, contrast blends with the image's mean grey, saturation
    blends each pixel with its grey, and the hue turns colours around the grey axis (a rotation in YIQ space, the
    linear form of a small hue shift that DALI's ``Hsv`` operator uses too; torchvision shifts hue in HSV). Composed
    into one 3x4 matrix, the four cost one ``cv2.transform`` pass over the uint8 image instead of four passes and an
    HSV round trip: measured on a 224 px crop, 0.05 ms against albumentations' ``ColorJitter``'s 0.6 ms. The
    factors are drawn as torchvision's ``ColorJitter`` draws them (brightness from ``[1 - b, 1 + b]``, hue from
    ``[-h, h]`` of a full turn); values are clipped once, at the end, where torchvision clips after each step.
    """

    def __init__(
        self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, hue: float = 0.02, p: float = 1.0
    ):
        super().__init__(p=p)
        for name, value, limit in (
            ("brightness", brightness, 1),
            ("contrast", contrast, 1),
            ("saturation", saturation, 1),
            ("hue", hue, 0.5),
        ):
            if not 0 <= value <= limit:
                raise ValueError(f"ColorTwist {name} must be in [0, {limit}], got {value}")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def get_params(self) -> dict[str, Any]:
        uniform = self.py_random.uniform
        factors = {
            "brightness": uniform(1 - self.brightness, 1 + self.brightness),
            "contrast": uniform(1 - self.contrast, 1 + self.contrast),
            "saturation": uniform(1 - self.saturation, 1 + self.saturation),
            "hue": uniform(-self.hue, self.hue),
        }
        order = list(factors)
        self.py_random.shuffle(order)
        return {"steps": [(name, factors[name]) for name in order]}

    def apply(self, img: np.ndarray, steps: Sequence[tuple[str, float]], **params: Any) -> np.ndarray:
        matrix, offset = np.eye(3), np.zeros(3)
        mean_rgb = np.array(cv2.mean(img)[:3])
        for name, factor in steps:
            if name == "brightness":
                step, shift = factor * np.eye(3), np.zeros(3)
            elif name == "contrast":  # towards the mean grey of the image as the steps so far left it
                mean_grey = LUMA @ (matrix @ mean_rgb + offset)
                step, shift = factor * np.eye(3), np.full(3, (1 - factor) * mean_grey)
            elif name == "saturation":
                step, shift = factor * np.eye(3) + (1 - factor) * np.outer(np.ones(3), LUMA), np.zeros(3)
            else:
                angle = -2 * math.pi * factor  # the sign of an HSV hue shift (red towards yellow)
                rotation = np.array(
                    [[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]]
                )
                step, shift = YIQ_TO_RGB @ rotation @ RGB_TO_YIQ, np.zeros(3)
            matrix, offset = step @ matrix, step @ offset + shift
        return cv2.transform(img, np.hstack([matrix, offset[:, None]]).astype(np.float32))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness", "contrast", "saturation", "hue")


def train_transform(image_size: int, scale: Sequence[float] = (0.25, 1.0)) -> A.Compose:
    """Random crop, flip and mild colour jitter, to a uint8 CHW tensor.

    The crop keeps at least 25% of the area by default (Inception uses 8%) because a small
    MobileNet trained briefly underfits rather than overfits under heavy cropping. It is resized bilinearly: the
    image is decoded at most about twice the size the crop needs (:func:`train_decode_side`), so a crop shrinks by
    little, where OpenCV's area resampling cost 0.7 ms of a 3 ms worker step at 224 px.
    """
    size = (image_size, image_size)
    return A.Compose(
        [
            A.RandomResizedCrop(size=size, scale=tuple(scale)),
            A.HorizontalFlip(p=0.5),
            ColorTwist(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8),
            ToTensorV2(),
        ]
    )


def eval_transform(
    image_size: int,
    crop_pct: float = 0.875,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> A.Compose:
    """Resize the shorter side to ``image_size / crop_pct``, then centre-crop (224 out of 256 by default): a uint8
    CHW tensor, or with ``mean`` and ``std`` a normalised float one (for predict, which feeds models image by
    image)."""
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    normalize = [A.Normalize(mean=tuple(mean), std=tuple(std))] if mean is not None and std is not None else []
    return A.Compose(
        [
            A.SmallestMaxSize(max_size=round(image_size / crop_pct), area_for_downscale="image"),
            A.CenterCrop(height=image_size, width=image_size),
            *normalize,
            ToTensorV2(),
        ]
    )


def train_decode_side(image_size: int, scale: Sequence[float]) -> int:
    """The shorter side a training image is decoded at, at least (:func:`mnet_tasks.data.images.read_rgb`'s
    ``min_side``): a random-resized crop of the mean area keeps ``image_size`` pixels across, so only crops smaller
    than the mean are upsampled, by at most ``sqrt(mean area / smallest area)`` (1.58x for the default 0.25-1)."""
    mean_area = (scale[0] + scale[1]) / 2
    return math.ceil(image_size / math.sqrt(mean_area))


def is_uint8_image(tensor: torch.Tensor) -> bool:
    """An image or a batch of them as the loaders deliver it: uint8, ``(..., 3, H, W)``."""
    return tensor.dtype == torch.uint8 and tensor.dim() in (3, 4) and tensor.shape[-3] == 3


def normalize_images(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """A uint8 ``(..., 3, H, W)`` batch as float32 normalised by ``mean`` and ``std`` (of ``[0, 1]`` values), in
    ``memory_format`` (a 4-d batch; channels_last is what the convolutions run fastest on). Normalised plane by
    plane, then laid out: 2.0 ms for 64 images of 128 px on 2 cores, where writing the channels_last float batch
    straight from the uint8 one takes 7.7 ms. The arithmetic is albumentations' ``Normalize`` in float32
    (``(x - 255 mean) / (255 std)``); albumentations rounds its float64 table once, so a value may differ from it in
    the last bits (measured: at most 2 ulp, 2.4e-7)."""
    shape = (-1, 1, 1)
    shift = torch.tensor([255.0 * m for m in mean], device=images.device).view(shape)
    inverse = torch.tensor([1.0 / (255.0 * s) for s in std], device=images.device).view(shape)
    normalized = images.to(torch.float32).sub_(shift).mul_(inverse)
    return normalized.contiguous(memory_format=memory_format) if images.dim() == 4 else normalized
