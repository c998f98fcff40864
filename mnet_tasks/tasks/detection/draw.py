"""Pictures of detections: boxes with class names and scores drawn on the input images."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import torch
from PIL import Image
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import draw_bounding_boxes


def label_color(label: int) -> tuple[int, int, int]:
    """Well-separated hues by the golden-ratio walk, the same colour for a class in every picture."""
    red, green, blue = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 1.0)
    return int(red * 255), int(green * 255), int(blue * 255)


def draw_detections(
    image: torch.Tensor, detections: dict[str, torch.Tensor], names: Sequence[str], min_score: float = 0.3
) -> Image.Image:
    """``image`` is a ``[0, 1]`` CHW tensor; boxes scoring below ``min_score`` are left out. Drawn by torchvision's
    ``draw_bounding_boxes``, with one colour per class in every picture."""
    keep = detections["scores"] >= min_score
    labels, scores = detections["labels"][keep].tolist(), detections["scores"][keep].tolist()
    pixels = (image.clamp(0, 1) * 255).byte().cpu()
    if not labels:  # torchvision warns on an empty box list
        return to_pil_image(pixels)
    drawn = draw_bounding_boxes(
        pixels,
        detections["boxes"][keep].cpu(),
        labels=[f"{names[label - 1]} {score:.2f}" for label, score in zip(labels, scores, strict=True)],
        colors=[label_color(label) for label in labels],
        width=2,
    )
    return to_pil_image(drawn)


def tile(pictures: Sequence[Image.Image], columns: int = 4) -> Image.Image:
    """Pictures of any sizes on one sheet, row by row."""
    rows = [pictures[i : i + columns] for i in range(0, len(pictures), columns)]
    width = max(sum(p.width for p in row) for row in rows)
    height = sum(max(p.height for p in row) for row in rows)
    sheet = Image.new("RGB", (width, height), (32, 32, 32))
    y = 0
    for row in rows:
        x = 0
        for picture in row:
            sheet.paste(picture, (x, y))
            x += picture.width
        y += max(p.height for p in row)
    return sheet
