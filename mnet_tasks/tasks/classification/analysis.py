"""A classifier's mistakes over one validation epoch: the confusion matrix (or, for many classes, its most confused
pairs) and the most confident wrong predictions, drawn as the network saw them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torchvision.transforms.functional import to_pil_image

from mnet_tasks.analysis import Picture, Table, TopK, captioned, denormalize, ranked_bars, tile
from mnet_tasks.distributed import gather_objects

MATRIX_CLASSES = 30  # the whole matrix is drawn up to this many classes; beyond, its most confused pairs
CONFUSED_PAIRS = 20  # rows of confused_pairs.csv (and bars when the matrix is not drawn)
CONFIDENT_MISTAKES = 16
Mistake = tuple[float, tuple[torch.Tensor, int, int]]  # confidence, (uint8 image, true class, predicted class)


def confusion_counts(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(true, predicted)`` image counts as a ``(C, C)`` int64 matrix: row = true class, column = prediction."""
    cells = labels.long() * num_classes + predicted.long()
    return torch.bincount(cells, minlength=num_classes * num_classes).view(num_classes, num_classes)


def confused_pairs(counts: np.ndarray, names: Sequence[str], top: int = CONFUSED_PAIRS) -> list[dict[str, Any]]:
    """The ``top`` off-diagonal cells with images, most images first (ties in class order): true class, predicted
    class, images, and their share of the true class's images."""
    off_diagonal = counts.copy()
    np.fill_diagonal(off_diagonal, 0)
    flat = np.argsort(-off_diagonal, axis=None, kind="stable")[:top]
    per_class = counts.sum(1)
    rows = []
    for true, predicted in zip(*np.unravel_index(flat, counts.shape), strict=True):
        count = int(off_diagonal[true, predicted])
        if count == 0:
            break
        rows.append(
            {
                "true": names[true],
                "predicted": names[predicted],
                "count": count,
                "share_of_true": count / int(per_class[true]),
            }
        )
    return rows


def confusion_figure(counts: np.ndarray, names: Sequence[str]) -> Figure:
    """The matrix of counts, each cell written in, the rows the true classes."""
    size = len(names)
    side = 2.5 + 0.32 * size
    figure = Figure(figsize=(side + 1.0, side), dpi=100)
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues", vmin=0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="images")
    ticks = np.arange(size)
    axes.set_xticks(ticks, names, rotation=90, fontsize=8)
    axes.set_yticks(ticks, names, fontsize=8)
    axes.set(xlabel="predicted", ylabel="true")
    darkest = counts.max() if counts.size else 0
    for true, predicted in zip(*np.nonzero(counts), strict=True):
        count = counts[true, predicted]
        color = "white" if count > darkest / 2 else "black"
        axes.text(predicted, true, str(count), ha="center", va="center", fontsize=7, color=color)
    total, correct = int(counts.sum()), int(np.trace(counts))
    axes.set_title(f"confusion matrix: {total} images, {correct / max(total, 1):.1%} correct", fontsize=10)
    figure.tight_layout()
    return figure


class ClassificationErrors:
    """What one validation epoch collects: the confusion counts (kept on ``device``) and a running top-K of the
    most confident wrong predictions (their images kept as uint8 on the CPU, de-normalised with ``mean`` and
    ``std``)."""

    def __init__(
        self,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        k: int = CONFIDENT_MISTAKES,
    ):
        self.num_classes = num_classes
        self.mean, self.std = mean, std
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
        self.mistakes = TopK(k)

    def update(self, images: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        confidence, predicted = logits.detach().softmax(1).max(1)
        self.counts += confusion_counts(labels, predicted, self.num_classes)
        wrong_confidence = confidence.masked_fill(predicted == labels, -1.0)  # right predictions rank last
        top = wrong_confidence.topk(min(self.mistakes.k, len(labels)))
        for score, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            if score < 0 or not self.mistakes.admits(score):
                break  # the rest are right, or score lower still
            image = denormalize(images[index], self.mean, self.std)
            self.mistakes.offer(score, (image, int(labels[index]), int(predicted[index])))

    def gathered(self) -> tuple[np.ndarray, list[Mistake]]:
        """The counts and the top-K over every process (each must call it)."""
        return sum(gather_objects(self.counts.cpu())).numpy(), self.mistakes.gathered()


def error_analysis(
    counts: np.ndarray, mistakes: Sequence[Mistake], names: Sequence[str]
) -> tuple[dict[str, Picture], dict[str, Table]]:
    """Pictures and tables for :func:`mnet_tasks.analysis.save_analysis`: ``confusion_matrix`` (with its table up
    to ``MATRIX_CLASSES`` classes; beyond, a picture of the most confused pairs), ``confused_pairs`` and
    ``confident_mistakes``."""
    pairs = confused_pairs(counts, names)
    tables: dict[str, Table] = {"confused_pairs": pairs}
    if len(names) <= MATRIX_CLASSES:
        pictures: dict[str, Picture] = {"confusion_matrix": confusion_figure(counts, names)}
        tables["confusion_matrix"] = [
            {"true/predicted": name, **{other: int(n) for other, n in zip(names, row, strict=True)}}
            for name, row in zip(names, counts, strict=True)
        ]
    else:
        bars = {f"{pair['true']} → {pair['predicted']}": pair["count"] for pair in pairs}
        title = f"the {len(pairs)} most confused pairs of {len(names)} classes ({int(counts.sum())} images)"
        pictures = {"confusion_matrix": ranked_bars(bars, xlabel="images", title=title, xlim=None)}
    if mistakes:
        pictures["confident_mistakes"] = mistakes_sheet(mistakes, names)
        tables["confident_mistakes"] = [
            {"true": names[true], "predicted": names[predicted], "confidence": score}
            for score, (_, true, predicted) in mistakes
        ]
    return pictures, tables


def mistakes_sheet(mistakes: Sequence[Mistake], names: Sequence[str]) -> Image.Image:
    """The wrong predictions as the network saw them, each captioned "true → predicted (confidence)"."""
    return tile(
        [
            captioned(to_pil_image(image), f"{names[true]} → {names[predicted]} ({score:.2f})")
            for score, (image, true, predicted) in mistakes
        ]
    )
