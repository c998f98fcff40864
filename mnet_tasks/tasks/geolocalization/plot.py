"""Predicted against true photo locations on an equirectangular map (a latitude/longitude grid, no coastlines,
so nothing is downloaded), with a line from each truth to its prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure


def error_segments(true: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``(segments, 2, 2)`` (lon, lat) line segments from each truth to its prediction, the short way round:
    a line whose longitude gap exceeds 180 degrees leaves one edge of the map and comes back at the other."""
    true_lon, true_lat = true[:, 1], true[:, 0]
    pred_lon, pred_lat = predicted[:, 1], predicted[:, 0]
    gap = pred_lon - true_lon
    wraps = np.abs(gap) > 180
    # Unwrapped end point: the prediction moved by 360 degrees to the same side of the map as the truth.
    far_lon = np.where(wraps, pred_lon - 360 * np.sign(gap), pred_lon)
    edge = np.where(far_lon > 180, 180.0, -180.0)
    share = np.divide(edge - true_lon, far_lon - true_lon, out=np.ones_like(true_lon), where=wraps)
    edge_lat = true_lat + share * (pred_lat - true_lat)
    direct = np.stack([np.stack([true_lon, true_lat], -1), np.stack([pred_lon, pred_lat], -1)], 1)[~wraps]
    first = np.stack([np.stack([true_lon, true_lat], -1), np.stack([edge, edge_lat], -1)], 1)[wraps]
    second = np.stack([np.stack([-edge, edge_lat], -1), np.stack([pred_lon, pred_lat], -1)], 1)[wraps]
    return np.concatenate([direct, first, second])


def plot_locations(path: str | Path, true: np.ndarray, predicted: np.ndarray, title: str = "") -> Path:
    """Write a PNG of ``true`` and ``predicted`` ``(N, 2)`` latitude/longitude points (degrees) to ``path``."""
    true, predicted = np.asarray(true, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if true.shape != predicted.shape or true.ndim != 2 or true.shape[1] != 2:
        raise ValueError(f"expected two (N, 2) latitude/longitude arrays, got {true.shape} and {predicted.shape}")
    figure = Figure(figsize=(12, 6.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.add_collection(LineCollection(error_segments(true, predicted), colors="0.55", linewidths=0.6, alpha=0.6))
    axes.scatter(true[:, 1], true[:, 0], s=10, c="tab:blue", label=f"true ({len(true)})", zorder=3)
    axes.scatter(predicted[:, 1], predicted[:, 0], s=10, c="tab:red", marker="x", label="predicted", zorder=4)
    axes.set(xlim=(-180, 180), ylim=(-90, 90), xlabel="longitude (degrees)", ylabel="latitude (degrees)")
    axes.set_xticks(np.arange(-180, 181, 30))
    axes.set_yticks(np.arange(-90, 91, 30))
    axes.set_aspect("equal")
    axes.grid(True, color="0.85", linewidth=0.6)
    axes.legend(loc="lower left", fontsize=9)
    if title:
        axes.set_title(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
