"""The verification ROC as face papers draw it: true accept rate against false accept rate on a log FAR axis, where
the operating points that matter (FAR 1e-3, 1e-4) can be read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

LOWEST_FAR = 1e-5  # where the FAR axis starts, unless the curves have fewer than 1e5 negative pairs
_RATE_SLACK = 1 + 1e-9  # as the metric's: 1e-4 × 10000 negatives is one false accept however the product rounds


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FAR and TAR at every threshold, from above the highest score (0, 0) down to the lowest (1, 1).

    A pair is accepted when its score is at least the threshold; there is one point per distinct score, so tied
    pairs are accepted together and no point depends on the order of a tie.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    same = np.asarray(same, dtype=bool).ravel()
    if scores.shape != same.shape:
        raise ValueError(f"expected one label per score, got {scores.shape} scores and {same.shape} labels")
    positives = int(same.sum())
    negatives = len(same) - positives
    if positives == 0 or negatives == 0:
        raise ValueError(f"a ROC needs positive and negative pairs, got {positives} and {negatives}")
    order = np.argsort(-scores, kind="stable")
    descending, accepted_same = scores[order], same[order]
    last_of_tie = np.r_[descending[1:] != descending[:-1], True]
    true_accepts = np.cumsum(accepted_same)[last_of_tie]
    false_accepts = np.cumsum(~accepted_same)[last_of_tie]
    return np.r_[0, false_accepts] / negatives, np.r_[0, true_accepts] / positives


def _far_text(far: float) -> str:
    return f"{far:.0e}".replace("e-0", "e-")


def negative_count(far: np.ndarray) -> int:
    """The number of negative pairs behind a :func:`roc_curve`: its FARs are multiples of 1/n, and its smallest
    step is 1/n unless every threshold accepts negatives in ties (then the smallest multiple that fits)."""
    far = np.asarray(far, dtype=np.float64)
    steps = np.diff(np.unique(np.r_[0.0, far]))
    if len(steps) == 0:
        return 1
    for multiple in range(1, 65):  # the smallest step is `multiple` negatives
        count = round(multiple / steps.min())
        scaled = far * count
        if np.allclose(scaled, np.round(scaled), rtol=0, atol=1e-6):
            return count
    return round(1 / steps.min())


def tar_at(far: np.ndarray, tar: np.ndarray, mark: float) -> float:
    """The best TAR of a curve at FAR <= ``mark``, as the metric's TAR at FAR: NaN when its n negatives are fewer
    than 1/mark, so that not even one false accept is allowed."""
    if np.floor(mark * negative_count(far) * _RATE_SLACK) < 1:
        return float("nan")
    return float(tar[far <= mark * _RATE_SLACK].max())


def save_roc(
    path: Path,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    far_marks: Sequence[float] = (1e-3, 1e-4),
    title: str = "",
) -> Path:
    """Write a PNG of the named ``(far, tar)`` curves (e.g. "student", "teacher", from :func:`roc_curve`) to
    ``path``, with dotted lines at ``far_marks`` and each curve's TAR there in the legend.

    Curves are drawn as steps: between two thresholds' FARs the TAR of the lower FAR is what can be had.
    """
    if not curves:
        raise ValueError("save_roc needs at least one curve")
    curves = {
        name: (np.asarray(far, dtype=np.float64), np.asarray(tar, dtype=np.float64))
        for name, (far, tar) in curves.items()
    }
    for name, (far, tar) in curves.items():
        if far.shape != tar.shape or far.ndim != 1 or len(far) == 0:
            raise ValueError(f"curve {name!r}: expected two 1-D arrays of equal length, got {far.shape}, {tar.shape}")
    figure = Figure(figsize=(7.5, 5.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, (far, tar) in curves.items():
        at_marks = []
        for mark in far_marks:
            value = tar_at(far, tar, mark)
            at_marks.append(f"{value:.3f} @ {_far_text(mark)}" if np.isfinite(value) else f"n/a @ {_far_text(mark)}")
        label = (f"{name}: TAR " + ", ".join(at_marks)) if at_marks else name
        axes.plot(far, tar, drawstyle="steps-post", linewidth=1.5, label=label)
    for mark in far_marks:
        axes.axvline(mark, linestyle=":", color="0.35", linewidth=1.0)
    # From 1e-5, or from one negative pair in n where the curves resolve no less; a mark below that still shows.
    resolution = max(LOWEST_FAR, min(1 / negative_count(far) for far, _ in curves.values()))
    left = min(resolution, min(far_marks) / 2) if far_marks else resolution
    axes.set_xscale("log", nonpositive="clip")  # FAR 0 (nothing accepted) starts the curve at the left edge
    axes.set(xlim=(left, 1.0), ylim=(0.0, 1.01), xlabel="false accept rate", ylabel="true accept rate")
    axes.grid(True, which="major", color="0.85", linewidth=0.6)
    axes.legend(loc="lower right", fontsize=9)
    if title:
        axes.set_title(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
