"""A synthetic detection dataset in the COCO layout: several shapes per image, COCO-style sparse category ids.

``<root>/annotations/instances_{train,val}2017.json`` and ``<root>/{train,val}2017/<id>.jpg``, exactly the files
of real COCO, so the same loader and COCOeval serve both. Objects are filled shapes of varied size on the calm
backgrounds of the classification shapes; boxes, polygons and areas come from the drawn outlines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from mnet_tasks.data.drawing import (
    JPEG_QUALITY,
    SHAPE_NAMES,
    UNIT_OUTLINES,
    background,
    draw_lines,
    shape_color,
)
from mnet_tasks.data.synthetic import Parameter, SyntheticData

DATASET_NAME = "synthetic_coco_shapes"
GENERATOR_VERSION = 1
SPLITS = {"train": "train2017", "val": "val2017"}
# Sparse like COCO's 1..90 with gaps, so the label mapping is exercised on the built-in data too.
CATEGORY_IDS = (2, 5, 11, 17, 23, 42, 57, 64, 77, 90, 3, 8)
EMPTY_IMAGE_SHARE = 0.03  # a few images hold no object at all, as in COCO
_SUPERSAMPLE = 4


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    union = (a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter
    return float(inter / union)


def _place_objects(rng: np.random.Generator, width: int, height: int, count: int) -> list[tuple[np.ndarray, float]]:
    """Centres and radii of up to ``count`` objects that overlap each other little (IoU of boxes <= 0.2)."""
    placed: list[tuple[np.ndarray, float]] = []
    short = min(width, height)
    for _ in range(count * 10):
        if len(placed) == count:
            break
        radius = short * rng.uniform(0.1, 0.3)
        center = rng.uniform([radius * 0.6, radius * 0.6], [width - radius * 0.6, height - radius * 0.6])
        box = np.array([*(center - radius), *(center + radius)])
        if all(_iou(box, np.array([*(c - r), *(c + r)])) <= 0.2 for c, r in placed):
            placed.append((center, radius))
    return placed


def render_detection_image(
    rng: np.random.Generator, width: int, height: int, names: list[str], max_objects: int
) -> tuple[Image.Image, list[dict]]:
    """One image and its objects: ``{"class_index", "bbox" (x, y, w, h), "segmentation", "area"}``."""
    canvas = Image.fromarray(background(rng, height, width).clip(0, 255).astype(np.uint8))
    draw_lines(rng, canvas, int(rng.integers(0, 3)))
    pixels = np.asarray(canvas, dtype=np.float64)
    count = 0 if rng.random() < EMPTY_IMAGE_SHARE else int(rng.integers(1, max_objects + 1))
    objects = []
    for center, radius in _place_objects(rng, width, height, count):
        class_index = int(rng.integers(len(names)))
        angle = rng.uniform(0, 2 * np.pi)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        stretch = rng.uniform(0.8, 1.2, size=2)
        outline = [
            (poly * stretch @ rotation.T * radius + center, hole) for poly, hole in UNIT_OUTLINES[names[class_index]]
        ]
        mask = Image.new("L", (width * _SUPERSAMPLE, height * _SUPERSAMPLE), 0)
        draw = ImageDraw.Draw(mask)
        for polygon, is_hole in outline:
            draw.polygon([tuple(p) for p in polygon * _SUPERSAMPLE], fill=0 if is_hole else 255)
        coverage = np.asarray(mask.reduce(_SUPERSAMPLE), dtype=np.float64)[:, :, None] / 255.0
        pixels = pixels * (1 - coverage) + shape_color(rng) * coverage
        points = np.concatenate([polygon for polygon, _ in outline])
        x0, y0 = np.clip(points.min(0), 0, [width, height])
        x1, y1 = np.clip(points.max(0), 0, [width, height])
        objects.append(
            {
                "class_index": class_index,
                "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                "segmentation": [[round(float(v), 2) for v in polygon.reshape(-1)] for polygon, _ in outline],
                "area": round(float(coverage.sum()), 2),
            }
        )
    noisy = pixels + rng.normal(0, rng.uniform(2, 6), size=pixels.shape)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8)), objects


def _image_size(rng: np.random.Generator, longer_side: int) -> tuple[int, int]:
    """Landscape and portrait images with aspect ratios from 1 to 1.6, as in photo collections."""
    shorter = round(longer_side / rng.uniform(1.0, 1.6))
    return (longer_side, shorter) if rng.random() < 0.7 else (shorter, longer_side)


def write_coco_shapes(folder: Path, params: dict[str, Any]) -> None:
    """Fill ``folder`` with the dataset with ``params``."""
    names = list(SHAPE_NAMES[: params["num_classes"]])
    counts = {"train": params["train_images"], "val": params["val_images"]}
    categories = [{"id": CATEGORY_IDS[i], "name": name, "supercategory": "shape"} for i, name in enumerate(names)]
    (folder / "annotations").mkdir()
    with tqdm(total=sum(counts.values()), desc="generating synthetic COCO shapes", unit="img") as bar:
        for split_index, (split, image_folder) in enumerate(SPLITS.items()):
            (folder / image_folder).mkdir()
            images, annotations = [], []
            for index in range(counts[split]):
                rng = np.random.default_rng(np.random.SeedSequence([params["seed"], split_index, index]))
                width, height = _image_size(rng, params["image_size"])
                image, objects = render_detection_image(rng, width, height, names, params["max_objects"])
                image_id = index + 1
                file_name = f"{image_id:012d}.jpg"
                image.save(folder / image_folder / file_name, quality=JPEG_QUALITY)
                images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
                for obj in objects:
                    category_id = CATEGORY_IDS[obj.pop("class_index")]
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": image_id,
                            "category_id": category_id,
                            "iscrowd": 0,
                            **obj,
                        }
                    )
                bar.update()
            record = {
                "info": {"description": f"{DATASET_NAME} {params}"},
                "images": images,
                "annotations": annotations,
                "categories": categories,
            }
            (folder / "annotations" / f"instances_{image_folder}.json").write_text(json.dumps(record))


COCO_SHAPES = SyntheticData(
    DATASET_NAME,
    GENERATOR_VERSION,
    {
        "num_classes": Parameter(3, 1, len(CATEGORY_IDS)),
        "train_images": Parameter(600, 1),
        "val_images": Parameter(100, 1),
        "image_size": Parameter(192, 64),  # the longer side of every image
        "max_objects": Parameter(4, 1),
        "seed": Parameter(0, 0),
    },
    write_coco_shapes,
)
