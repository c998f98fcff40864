"""A small synthetic shape-classification dataset, so the suite runs end to end without downloads.

Images are written in the ImageNet/ImageFolder layout (``<root>/<split>/<class>/<class>_00000.jpg``)
so that exactly the same loader serves the synthetic data and a real dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from mnet_tasks.data.drawing import JPEG_QUALITY, SHAPE_NAMES, UNIT_OUTLINES, background, draw_lines, shape_color
from mnet_tasks.data.synthetic import Parameter, SyntheticData

DATASET_NAME = "synthetic_shapes"
# Bump when the drawing code changes so that old caches are not silently reused.
GENERATOR_VERSION = 2
SPLITS = ("train", "val")
_SUPERSAMPLE = 4  # shape masks are drawn larger and box-filtered down for anti-aliased edges


def _shape_mask(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    """Coverage in [0, 1] of one randomly sized, placed, rotated, filled or outlined shape."""
    big = size * _SUPERSAMPLE
    radius = rng.uniform(0.2, 0.35) * big  # diameter 40-70% of the image
    # Centred within +-10% of the image (random crops add more shift): enough to vary, not to stall learning.
    center = big / 2 + rng.uniform(-1, 1, size=2) * min(big / 2 - radius, 0.1 * big)
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    stretch = rng.uniform(0.85, 1.15, size=2)
    outlined = rng.random() < 0.2
    width = max(2 * _SUPERSAMPLE, int(radius * rng.uniform(0.1, 0.2)))

    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    for polygon, is_hole in UNIT_OUTLINES[name]:
        points = [tuple(p) for p in (polygon * stretch) @ rotation.T * radius + center]
        if outlined:
            draw.line([*points, points[0]], fill=255, width=width, joint="curve")
        else:
            draw.polygon(points, fill=0 if is_hole else 255)
    return np.asarray(mask.reduce(_SUPERSAMPLE), dtype=np.float64) / 255.0


def render_shape_image(rng: np.random.Generator, name: str, size: int) -> Image.Image:
    """Draw one image of shape ``name`` with a line or two of clutter; all randomness comes from ``rng``."""
    canvas = Image.fromarray(background(rng, size, size).clip(0, 255).astype(np.uint8))
    draw_lines(rng, canvas, int(rng.integers(0, 2)))

    coverage = _shape_mask(rng, name, size)[:, :, None]
    pixels = np.asarray(canvas, dtype=np.float64)
    color = shape_color(rng)
    shading = rng.normal(0, 12, size=3) * np.linspace(-1, 1, size)[:, None, None]
    pixels = pixels * (1 - coverage) + (color + shading) * coverage

    canvas = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw_lines(rng, canvas, int(rng.integers(0, 2)))  # lines over the shape partly occlude it
    noisy = np.asarray(canvas, dtype=np.float64) + rng.normal(0, rng.uniform(2, 8), size=(size, size, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def _image_rng(seed: int, split: str, class_index: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), class_index, index]))


def write_shapes(folder: Path, params: dict[str, Any]) -> None:
    """Fill ``folder`` with the synthetic shapes dataset with ``params``.

    Every image is drawn from its own generator seeded by (seed, split, class, index), so the
    files are byte-identical for the same parameters.
    """
    counts = {"train": params["train_per_class"], "val": params["val_per_class"]}
    names = SHAPE_NAMES[: params["num_classes"]]
    with tqdm(total=len(names) * sum(counts.values()), desc="generating synthetic shapes", unit="img") as bar:
        for split in SPLITS:
            for class_index, name in enumerate(names):
                (folder / split / name).mkdir(parents=True)
                for index in range(counts[split]):
                    rng = _image_rng(params["seed"], split, class_index, index)
                    image = render_shape_image(rng, name, params["image_size"])
                    image.save(folder / split / name / f"{name}_{index:05d}.jpg", quality=JPEG_QUALITY)
                    bar.update()


SHAPES = SyntheticData(
    DATASET_NAME,
    GENERATOR_VERSION,
    {
        "num_classes": Parameter(10, 2, len(SHAPE_NAMES)),
        "train_per_class": Parameter(400, 1),
        "val_per_class": Parameter(50, 1),
        "image_size": Parameter(96, 16),
        "seed": Parameter(0, 0),
    },
    write_shapes,
)
