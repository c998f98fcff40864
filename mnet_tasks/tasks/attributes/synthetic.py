"""Procedural faces with visible attributes, written in the CelebA layout, so the attribute task runs offline.

The files are exactly what the real loader reads (see ``mnet_tasks.tasks.attributes.data``)::

    <root>/img_align_celeba/000001.jpg ...   portrait images with CelebA's 178:218 aspect
    <root>/list_attr_celeba.txt              count line, attribute-names line, then "<image> -1/1 ..." per image
    <root>/list_eval_partition.txt           "<image> <0|1|2>": train, val, test

Every attribute is drawn into the pixels (glasses are frames around the eyes, a smile is a curved mouth, ...).
The unlabeled images are listed as training images in the partition file but have no line in the attribute
file: they can train a student by distillation only.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from mnet_tasks.data.drawing import background
from mnet_tasks.data.synthetic import Parameter, SyntheticData

DATASET_NAME = "synthetic_faces"
# Bump when the drawing code changes so that old caches are not silently reused.
GENERATOR_VERSION = 1
JPEG_QUALITY = 90
IMAGE_DIR = "img_align_celeba"
ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
CELEBA_ASPECT = 218 / 178  # height / width of CelebA's aligned images
_SUPERSAMPLE = 4  # drawn larger and box-filtered down for anti-aliased edges

# CelebA's names where CelebA has the attribute (No_Beard is positive for a shaven face, as in CelebA).
ATTRIBUTE_NAMES = (
    "Bangs",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Eyeglasses",
    "Eyes_Open",
    "Gray_Hair",
    "Mouth_Slightly_Open",
    "Mustache",
    "No_Beard",
    "Pale_Skin",
    "Smiling",
    "Wearing_Hat",
    "Wearing_Lipstick",
)
# One hair colour per face: (attribute, probability, RGB).
HAIR_COLOURS = (
    ("Black_Hair", 0.30, (28, 22, 20)),
    ("Brown_Hair", 0.30, (105, 62, 32)),
    ("Blond_Hair", 0.25, (228, 196, 118)),
    ("Gray_Hair", 0.15, (165, 163, 160)),
)
PALE_SKIN = np.array((246, 226, 214))
SKIN_RANGE = (np.array((222, 176, 146)), np.array((104, 66, 46)))  # the other skin tones: light to dark
LIPSTICK = (196, 24, 48)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def sample_attributes(rng: np.random.Generator) -> dict[str, bool]:
    """One face's attributes, with a few of the correlations real faces have (lipstick rarely with a beard)."""
    hair = rng.choice(len(HAIR_COLOURS), p=[p for _, p, _ in HAIR_COLOURS])
    beard = rng.random() < 0.3
    mustache = rng.random() < (0.6 if beard else 0.1)
    hat = rng.random() < 0.25
    values = {name: index == hair for index, (name, _, _) in enumerate(HAIR_COLOURS)}
    values.update(
        Bangs=not hat and rng.random() < 0.4,
        Eyeglasses=rng.random() < 0.25,
        Eyes_Open=rng.random() < 0.75,
        Mouth_Slightly_Open=rng.random() < 0.35,
        Mustache=mustache,
        No_Beard=not beard,
        Pale_Skin=rng.random() < 0.2,
        Smiling=rng.random() < 0.5,
        Wearing_Hat=hat,
        Wearing_Lipstick=not (beard or mustache) and rng.random() < 0.45,
    )
    return {name: bool(values[name]) for name in ATTRIBUTE_NAMES}


def _jitter(rng: np.random.Generator, colour: Any, amount: float) -> tuple[int, ...]:
    return tuple(int(v) for v in np.clip(np.asarray(colour) + rng.normal(0, amount, size=3), 0, 255))


def _box(cx: float, cy: float, half_width: float, half_height: float) -> tuple[float, float, float, float]:
    return (cx - half_width, cy - half_height, cx + half_width, cy + half_height)


def render_face(rng: np.random.Generator, attributes: dict[str, bool], width: int) -> Image.Image:
    """Draw one portrait with ``attributes`` visible; pose, size, colours and lighting vary with ``rng``."""
    height = round(width * CELEBA_ASPECT)
    s = _SUPERSAMPLE
    big_w, big_h = width * s, height * s
    # Face ellipse: centre, half-width a, half-height b (CelebA's aligned faces sit a little below the middle).
    a = big_w * rng.uniform(0.24, 0.3)
    b = a * rng.uniform(1.22, 1.38)
    cx = big_w * (0.5 + rng.uniform(-0.04, 0.04))
    cy = big_h * (0.55 + rng.uniform(-0.03, 0.03))

    hair = _jitter(rng, next(rgb for name, _, rgb in HAIR_COLOURS if attributes[name]), 10)
    if attributes["Pale_Skin"]:
        skin = _jitter(rng, PALE_SKIN, 4)
    else:
        light, dark = SKIN_RANGE
        skin = _jitter(rng, light + rng.uniform(0, 1) * (dark - light), 6)
    shade = tuple(int(v * 0.8) for v in skin)
    outline = max(1, round(a * 0.05))  # stroke width of glasses, brows and closed eyes

    layer = Image.new("RGBA", (big_w, big_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    # hair behind the head, the neck, the face
    draw.ellipse(_box(cx, cy - 0.18 * b, 1.2 * a, 1.08 * b), fill=hair)
    draw.rectangle((cx - 0.45 * a, cy + 0.6 * b, cx + 0.45 * a, 1.2 * big_h), fill=shade)  # past the tilt
    draw.ellipse(_box(cx, cy, a, b), fill=skin)
    if not attributes["No_Beard"]:
        draw.chord(_box(cx, cy, a, b), 15, 165, fill=hair)
        draw.ellipse(_box(cx, cy + 0.5 * b, 0.45 * a, 0.2 * b), fill=hair)
    # nose
    draw.line([(cx, cy - 0.05 * b), (cx - 0.08 * a, cy + 0.22 * b), (cx + 0.05 * a, cy + 0.25 * b)], shade, outline)

    eye_y = cy - 0.12 * b
    for side in (-1, 1):
        ex = cx + side * 0.4 * a
        draw.line([(ex - 0.2 * a, eye_y - 0.18 * b), (ex + 0.2 * a, eye_y - 0.2 * b)], hair, 2 * outline)
        if attributes["Eyes_Open"]:
            draw.ellipse(_box(ex, eye_y, 0.2 * a, 0.1 * b), fill=(245, 245, 240))
            draw.ellipse(_box(ex, eye_y, 0.09 * a, 0.09 * a), fill=_jitter(rng, (60, 45, 35), 15))
        else:
            draw.arc(_box(ex, eye_y - 0.04 * b, 0.2 * a, 0.08 * b), 20, 160, fill=(40, 30, 30), width=outline)
        if attributes["Eyeglasses"]:
            draw.ellipse(_box(ex, eye_y, 0.3 * a, 0.22 * b), outline=(20, 20, 24), width=outline)
            draw.line([(ex + side * 0.3 * a, eye_y), (cx + side * a, eye_y - 0.05 * b)], (20, 20, 24), outline)
    if attributes["Eyeglasses"]:
        draw.line([(cx - 0.1 * a, eye_y), (cx + 0.1 * a, eye_y)], (20, 20, 24), outline)

    mouth_y = cy + 0.5 * b
    lips = LIPSTICK if attributes["Wearing_Lipstick"] else tuple(int(v * 0.65) for v in skin)
    mouth = _box(cx, mouth_y - 0.12 * b, 0.36 * a, 0.18 * b)  # its lower half curves up: a smile
    if attributes["Mouth_Slightly_Open"] and attributes["Smiling"]:
        draw.chord(mouth, 0, 180, fill=(50, 16, 20), outline=lips, width=2 * outline)
    elif attributes["Mouth_Slightly_Open"]:
        draw.ellipse(_box(cx, mouth_y, 0.24 * a, 0.08 * b), fill=(50, 16, 20), outline=lips, width=2 * outline)
    elif attributes["Smiling"]:
        draw.arc(mouth, 10, 170, fill=lips, width=3 * outline)
    else:
        draw.line([(cx - 0.3 * a, mouth_y), (cx + 0.3 * a, mouth_y)], lips, 3 * outline)
    if attributes["Mustache"]:
        draw.chord(_box(cx, mouth_y - 0.08 * b, 0.36 * a, 0.12 * b), 180, 360, fill=hair)

    if attributes["Bangs"]:
        draw.chord(_box(cx, cy, a, b), 200, 340, fill=hair)  # the face's top cap, down to the brows
    if attributes["Wearing_Hat"]:
        hue, saturation, value = rng.uniform(0, 1), rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.85)
        hat = tuple(int(v * 255) for v in colorsys.hsv_to_rgb(hue, saturation, value))
        draw.chord(_box(cx, cy - 0.62 * b, 1.05 * a, 0.7 * b), 180, 360, fill=hat)
        draw.rectangle((cx - 1.25 * a, cy - 0.68 * b, cx + 1.25 * a, cy - 0.55 * b), fill=hat)

    # Shrink (premultiplied, so edges blend with the background, not with black), tilt the head, composite.
    angle = rng.uniform(-10, 10)
    face = layer.convert("RGBa").reduce(s).rotate(angle, Image.Resampling.BILINEAR, center=(cx / s, cy / s))
    canvas = Image.fromarray(background(rng, height, width).clip(0, 255).astype(np.uint8)).convert("RGBA")
    portrait = Image.alpha_composite(canvas, face.convert("RGBA")).convert("RGB")

    # light from one side, and sensor noise
    pixels = np.asarray(portrait, dtype=np.float64)
    light = 1 + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, width)[None, :, None]
    pixels = pixels * light * rng.uniform(0.85, 1.1) + rng.normal(0, rng.uniform(2, 6), size=pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def write_faces(folder: Path, params: dict[str, Any]) -> None:
    """Fill ``folder`` with the synthetic faces with ``params``.

    Images are numbered like CelebA's (``000001.jpg``): labelled training images, then the unlabeled ones
    (training split, no attribute line), then validation and test. Each image has its own generator seeded by
    (seed, number), so the files are byte-identical for the same parameters.
    """
    splits = [
        ("train", True, params["train_images"]),
        ("train", False, params["unlabeled_images"]),
        ("val", True, params["val_images"]),
        ("test", True, params["test_images"]),
    ]
    total = sum(count for _, _, count in splits)
    (folder / IMAGE_DIR).mkdir()
    attribute_lines, partition_lines = [], []
    with tqdm(total=total, desc="generating synthetic faces", unit="img") as bar:
        for split, labelled, count in splits:
            for _ in range(count):
                number = len(partition_lines) + 1
                name = f"{number:06d}.jpg"
                rng = np.random.default_rng(np.random.SeedSequence([params["seed"], number]))
                attributes = sample_attributes(rng)
                render_face(rng, attributes, params["image_width"]).save(
                    folder / IMAGE_DIR / name, quality=JPEG_QUALITY
                )
                partition_lines.append(f"{name} {SPLIT_IDS[split]}")
                if labelled:
                    values = " ".join(f"{1 if attributes[a] else -1:2d}" for a in ATTRIBUTE_NAMES)
                    attribute_lines.append(f"{name} {values}")
                bar.update()
    header = [str(len(attribute_lines)), " ".join(ATTRIBUTE_NAMES)]
    (folder / ATTRIBUTE_FILE).write_text("\n".join(header + attribute_lines) + "\n")
    (folder / PARTITION_FILE).write_text("\n".join(partition_lines) + "\n")


FACES = SyntheticData(
    DATASET_NAME,
    GENERATOR_VERSION,
    {
        "train_images": Parameter(3000, 1),
        "unlabeled_images": Parameter(1000, 0),
        "val_images": Parameter(500, 1),
        "test_images": Parameter(500, 0),
        "image_width": Parameter(96, 32),  # the height follows CelebA's 178:218 aspect (96 -> 96x118)
        "seed": Parameter(0, 0),
    },
    write_faces,
)
