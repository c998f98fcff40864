"""Drawing pieces the synthetic datasets share: filled shape outlines, calm backgrounds, clutter lines, colours."""

from __future__ import annotations

import colorsys
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

JPEG_QUALITY = 90

Polygon = np.ndarray  # (N, 2) float array of x, y points
# A shape is a list of (polygon, is_hole) pairs in unit coordinates, y pointing down.
Outline = list[tuple[Polygon, bool]]


def _arc(center: tuple[float, float], radius: float, start: float, stop: float, points: int) -> Polygon:
    angles = np.linspace(start, stop, points)
    return np.stack([center[0] + radius * np.cos(angles), center[1] + radius * np.sin(angles)], axis=1)


def _regular(corners: int, radius: float = 1.0, phase: float = -np.pi / 2) -> Polygon:
    return _arc((0.0, 0.0), radius, phase, phase + 2 * np.pi, corners + 1)[:-1]


def _circle() -> Outline:
    return [(_regular(72), False)]


def _square() -> Outline:
    return [(_regular(4, phase=np.pi / 4), False)]


def _triangle() -> Outline:
    return [(_regular(3), False)]


def _hexagon() -> Outline:
    return [(_regular(6), False)]


def _star() -> Outline:
    outer, inner = _regular(5), _regular(5, radius=0.4, phase=-np.pi / 2 + np.pi / 5)
    return [(np.stack([outer, inner], axis=1).reshape(-1, 2), False)]


def _cross() -> Outline:
    a, b = 0.3, 1.0  # half arm width, arm length
    points = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a)]
    return [(np.array([*points, (-b, -a), (-a, -a)], dtype=float), False)]


def _ring() -> Outline:
    return [(_regular(72), False), (_regular(72, radius=0.55), True)]


def _diamond() -> Outline:
    return [(np.array([(0.0, -1.0), (0.55, 0.0), (0.0, 1.0), (-0.55, 0.0)]), False)]


def _crescent() -> Outline:
    """The unit disc minus a disc of radius ``r`` centred at ``(d, 0)``, traced as one polygon."""
    d, r = 0.5, 0.85
    x = (1 - r**2 + d**2) / (2 * d)
    y = np.sqrt(1 - x**2)
    outer_start = np.arctan2(y, x)
    inner_start = np.arctan2(y, x - d)
    outer = _arc((0.0, 0.0), 1.0, outer_start, 2 * np.pi - outer_start, 48)
    inner = _arc((d, 0.0), r, 2 * np.pi - inner_start, inner_start, 40)
    return [(np.concatenate([outer, inner[1:-1]]), False)]


def _arrow() -> Outline:
    points = [(-1.0, -0.2), (0.2, -0.2), (0.2, -0.55), (1.0, 0.0), (0.2, 0.55), (0.2, 0.2), (-1.0, 0.2)]
    return [(np.array(points), False)]


def _heart() -> Outline:
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [(np.stack([x, y + 2.5], axis=1), False)]


def _semicircle() -> Outline:
    return [(_arc((0.0, 0.4), 1.0, np.pi, 2 * np.pi, 40), False)]


# Only shapes whose mirror image is a rotation of themselves: training flips images horizontally.
SHAPES: dict[str, Callable[[], Outline]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "cross": _cross,
    "ring": _ring,
    "hexagon": _hexagon,
    "diamond": _diamond,
    "crescent": _crescent,
    "arrow": _arrow,
    "heart": _heart,
    "semicircle": _semicircle,
}
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)


def _unit_outlines() -> dict[str, Outline]:
    """Scale every shape so that it just fits the unit circle; sizes then mean the same for all shapes."""
    outlines = {}
    for name, build in SHAPES.items():
        outline = build()
        radius = max(np.linalg.norm(polygon, axis=1).max() for polygon, _ in outline)
        outlines[name] = [(polygon / radius, is_hole) for polygon, is_hole in outline]
    return outlines


UNIT_OUTLINES = _unit_outlines()


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A dark tinted grey with a gentle gradient and a soft blob (float HxWx3).

    Kept calm on purpose: a 27-layer plain network like MobileNetV1 learns shapes from scratch within a minute of
    CPU only when the shape, not the background, carries the contrast (busy colour backgrounds took 10x longer).
    """
    ys, xs = np.mgrid[0:height, 0:width] / (np.array([height, width])[:, None, None] - 1)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = xs * np.cos(angle) + ys * np.sin(angle) - 0.5
    base = rng.uniform(40, 120) + rng.uniform(-15, 15, size=3)
    image = base + rng.uniform(-25, 25) * ramp[:, :, None]
    cx, cy = rng.uniform(0, 1, size=2)
    sigma = rng.uniform(0.1, 0.3)
    blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    return image + blob[:, :, None] * rng.uniform(-30, 30)


def draw_lines(rng: np.random.Generator, image: Image.Image, count: int) -> None:
    """Random straight lines across the image: clutter that is not one of the class shapes."""
    draw = ImageDraw.Draw(image)
    for _ in range(count):
        start, end = rng.uniform(-0.2, 1.2, size=(2, 2)) * image.size
        color = tuple(int(v) for v in rng.integers(0, 256, size=3))
        thickest = max(1, min(image.size) // 48)
        draw.line([tuple(start), tuple(end)], fill=color, width=int(rng.integers(1, thickest + 1)))


def shape_color(rng: np.random.Generator) -> np.ndarray:
    """A light, pale-tinted colour: the shapes are always brighter than the darker background."""
    hue, saturation, value = rng.uniform(0, 1), rng.uniform(0.0, 0.35), rng.uniform(0.85, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value)) * 255
