"""Pictures of detections: boxes with class names and scores drawn on the input images; a missed object among
them; precision-recall curves."""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import draw_bounding_boxes

MIN_SCORE = 0.3  # detections scoring less are not drawn
LEGEND_CATEGORIES = 20  # precision-recall curves are named in a legend up to this many categories


def label_color(label: int) -> tuple[int, int, int]:
    """Well-separated hues by the golden-ratio walk, the same colour for a class in every picture."""
    red, green, blue = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 1.0)
    return int(red * 255), int(green * 255), int(blue * 255)


def draw_detections(
    image: torch.Tensor, detections: dict[str, torch.Tensor], names: Sequence[str], min_score: float = MIN_SCORE
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


def draw_miss(
    image: torch.Tensor, missed: Sequence[float], detections: Sequence[tuple[Sequence[float], int]]
) -> Image.Image:
    """``image`` (uint8 CHW) with a missed ground-truth box (xyxy) drawn thick in red over the image's detections,
    ``(xyxy box, label)`` pairs drawn thin and faint in their class colours, to show what was found instead."""
    picture = to_pil_image(image).convert("RGBA")
    overlay = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for box, label in detections:
        draw.rectangle(list(box), outline=(*label_color(label), 130), width=1)
    draw.rectangle(list(missed), outline=(255, 30, 30, 255), width=3)
    return Image.alpha_composite(picture, overlay).convert("RGB")


def pr_curves_figure(curves: Mapping[float, tuple[np.ndarray, Mapping[str, np.ndarray]]], title: str = "") -> Figure:
    """One panel per IoU threshold: precision against recall per category (thin; named up to
    ``LEGEND_CATEGORIES``), and their mean over the categories (thick), whose average over recall is the AP there.
    ``curves`` maps each IoU to ``(recall thresholds, {category: precision})``
    (:func:`~mnet_tasks.tasks.detection.coco_eval.precision_recall`)."""
    figure = Figure(figsize=(5.5 * len(curves), 5), dpi=100)
    for position, (iou, (recall, per_category)) in enumerate(curves.items(), start=1):
        axes = figure.add_subplot(1, len(curves), position)
        named = len(per_category) <= LEGEND_CATEGORIES
        for name, precision in per_category.items():
            axes.plot(recall, precision, linewidth=1.0, alpha=0.8 if named else 0.35, label=name if named else None)
        if per_category:
            mean = np.mean(list(per_category.values()), axis=0)
            axes.plot(recall, mean, color="black", linewidth=2.2, label=f"mean (AP {mean.mean():.3f})")
            axes.legend(loc="best", fontsize=7)
        axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
        axes.set_title(f"IoU {iou:g}: {len(per_category)} categories", fontsize=10)
        axes.grid(True, color="0.85", linewidth=0.6)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
