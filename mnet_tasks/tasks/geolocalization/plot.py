"""Predicted against true photo locations on an equirectangular map (a latitude/longitude grid, no coastlines,
so nothing is downloaded), with a line from each truth to its prediction; and the error's cumulative distribution
with the Im2GPS scales marked."""

from __future__ import annotations

from collections.abc import Sequence
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


def within_shares(distances_km: np.ndarray, scales_km: Sequence[float]) -> np.ndarray:
    """The share of photos located within each distance (inclusive): the error CDF at ``scales_km``, as the
    ``val/acc_<d>km`` metrics count it."""
    distances_km = np.asarray(distances_km, dtype=np.float64)
    return np.array([np.count_nonzero(distances_km <= scale) / len(distances_km) for scale in scales_km])


def error_cdf_figure(distances_km: np.ndarray, scales_km: Sequence[float], title: str = "") -> Figure:
    """The share of photos within d km against d (log axis), each of ``scales_km`` marked with its share."""
    distances_km = np.sort(np.asarray(distances_km, dtype=np.float64))
    if distances_km.ndim != 1 or len(distances_km) == 0:
        raise ValueError(f"expected a non-empty list of distances, got shape {distances_km.shape}")
    shares = np.arange(1, len(distances_km) + 1) / len(distances_km)
    left = min(0.1, min(scales_km) / 2)  # exact hits (0 km) show at the left edge of the log axis
    figure = Figure(figsize=(8, 5), dpi=100)
    axes = figure.add_subplot()
    axes.step(np.r_[left, np.maximum(distances_km, left)], np.r_[0.0, shares], where="post", color="tab:blue")
    for scale, share in zip(scales_km, within_shares(distances_km, scales_km), strict=True):
        axes.axvline(scale, color="0.45", linestyle=":", linewidth=1.0)
        axes.plot([scale], [share], "o", color="tab:red", markersize=4)
        above = share < 0.85  # the label beside the point, clear of the axis and of the top edge
        axes.annotate(
            f"{scale:g} km\n{100 * share:.1f}%",
            (scale, share),
            textcoords="offset points",
            xytext=(4, 6 if above else -26),
            fontsize=8,
        )
    axes.set_xscale("log")
    axes.set(xlim=(left, 2.1e4), ylim=(0.0, 1.02), xlabel="great-circle error (km)", ylabel="share of photos within")
    axes.grid(True, which="major", color="0.85", linewidth=0.6)
    axes.set_title(title or f"error distribution over {len(distances_km)} photos", fontsize=10)
    figure.tight_layout()
    return figure
