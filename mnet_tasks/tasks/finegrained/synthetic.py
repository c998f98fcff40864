"""A synthetic fine-grained dataset in the Stanford Dogs layout: "breeds" of one animal that differ in small details.

Every image shows the same four-legged animal seen from the side (body, head, snout, legs, tail, ears) in a random
pale coat colour, pose, size, position and facing, over the calm backgrounds of the classification shapes. A breed
is a combination of three details: the ears (pointed, round or floppy), the tail (plain or ringed with dark bands)
and the coat (solid or with a dark saddle patch on the back), 12 breeds in all. Nothing else tells them apart, so
the classes are much closer to each other than the classification shapes are.

The files are those of Stanford Dogs, so the same loader serves both::

    <root>/Images/<wnid>-<breed>/<wnid>_<index>.jpg
    <root>/Annotation/<wnid>-<breed>/<wnid>_<index>      PASCAL VOC XML with the animal's box, no file extension
    <root>/train_list.mat, test_list.mat, file_list.mat  file_list, annotation_list (cells), labels (1-based)
"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image, ImageDraw
from tqdm import tqdm

from mnet_tasks.data.drawing import JPEG_QUALITY, background, draw_lines, shape_color
from mnet_tasks.data.synthetic import Parameter, SyntheticData

DATASET_NAME = "synthetic_breeds"
GENERATOR_VERSION = 1
SPLITS = ("train", "test")
EARS = ("pointed", "round", "floppy")
TAILS = ("plain", "ringed")
COATS = ("solid", "saddled")
# Ears vary fastest, so that any first few breeds already differ in one detail at a time.
BREEDS: tuple[tuple[str, str, str], ...] = tuple(
    (ears, tail, coat) for tail, coat, ears in itertools.product(TAILS, COATS, EARS)
)
FIRST_WNID = 90_000_001  # synthetic WordNet-style ids, clear of the real n02085620..n02116738 dog synsets
_SUPERSAMPLE = 4

Polygon = np.ndarray  # (N, 2) float array of x, y points


def breed_folder(index: int) -> str:
    """``n90000001-pointed_ears_plain_tail_solid``: a Stanford Dogs folder name, ``<wnid>-<breed>``."""
    ears, tail, coat = BREEDS[index]
    return f"n{FIRST_WNID + index:08d}-{ears}_ears_{tail}_tail_{coat}"


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, points: int = 36) -> Polygon:
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _limb(top: tuple[float, float], length: float, width: float, angle: float) -> Polygon:
    """A leg: a rectangle hanging from ``top``, swung by ``angle`` (radians, positive swings it forward)."""
    direction = np.array([np.sin(angle), np.cos(angle)])
    across = np.array([direction[1], -direction[0]]) * width / 2
    start, end = np.array(top), np.array(top) + direction * length
    return np.array([start - across, start + across, end + across, end - across])


def _ears(kind: str) -> list[Polygon]:
    """Two ears on top of the head (centre (0.72, -0.42) in animal units); the far one slightly behind."""
    ears = []
    for dx in (0.0, -0.1):
        if kind == "pointed":
            ears.append(np.array([(0.62 + dx, -0.5), (0.76 + dx, -0.52), (0.68 + dx, -0.86)]))
        elif kind == "round":
            ears.append(_ellipse(0.68 + dx, -0.6, 0.1, 0.1))
        else:  # floppy: hangs down beside the head
            ears.append(_ellipse(0.62 + dx, -0.4, 0.07, 0.17, angle=0.35))
    return ears


def _tail(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Centre points of a curved tail leaving the rump, and its radius; raised or lowered at random."""
    lift = rng.uniform(-0.5, 0.6)
    t = np.linspace(0, 1, 24)[:, None]
    start, control = np.array([-0.58, -0.1]), np.array([-0.85, -0.1 - 0.3 * lift])
    end = np.array([-0.95 + 0.1 * lift, -0.1 - 0.6 * lift])
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end, 0.075


def _animal_parts(rng: np.random.Generator, breed: tuple[str, str, str]) -> tuple[list, list, list]:
    """Coat shapes, marking shapes (drawn dark, inside the coat) and eye, in animal units (facing right, y down).

    Each shape is ``("polygon", points)`` or ``("disc", centre, radius)``.
    """
    ears, tail_kind, coat = breed
    coat_shapes: list = [
        ("polygon", _ellipse(0.0, 0.0, 0.58, 0.27)),  # body
        ("polygon", np.array([(0.3, -0.2), (0.62, -0.52), (0.8, -0.32), (0.5, 0.05)])),  # neck
        ("polygon", _ellipse(0.72, -0.42, 0.17, 0.15)),  # head
        ("polygon", _ellipse(0.9, -0.36, 0.12, 0.07)),  # snout
    ]
    swing = rng.uniform(-0.35, 0.35)
    for x, phase in ((-0.42, 1), (-0.28, -1), (0.28, -1), (0.42, 1)):
        coat_shapes.append(("polygon", _limb((x, 0.12), 0.6, 0.11, phase * swing + rng.uniform(-0.1, 0.1))))
    coat_shapes += [("polygon", ear) for ear in _ears(ears)]
    centres, radius = _tail(rng)
    coat_shapes += [("disc", c, radius) for c in centres]

    markings: list = []
    if tail_kind == "ringed":  # two dark bands across the tail
        markings += [("disc", c, radius * 1.05) for c in centres[7:11]]
        markings += [("disc", c, radius * 1.05) for c in centres[16:20]]
    if coat == "saddled":  # a dark patch on the back
        markings.append(("polygon", _ellipse(-0.08, -0.14, 0.24, 0.12)))
    eye = [("disc", np.array([0.78, -0.46]), 0.035)]
    return coat_shapes, markings, eye


def _coverage(shapes: list, to_pixels, big: int, scale: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of ``shapes`` drawn at ``_SUPERSAMPLE`` times the size."""
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    for shape in shapes:
        if shape[0] == "polygon":
            draw.polygon([tuple(p) for p in to_pixels(shape[1])], fill=255)
        else:
            (cx, cy), r = to_pixels(shape[1][None])[0], shape[2] * scale
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    return np.asarray(mask.reduce(_SUPERSAMPLE), dtype=np.float64) / 255.0


def render_animal_image(
    rng: np.random.Generator, breed: tuple[str, str, str], size: int
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """One image of ``breed`` and the animal's box ``(xmin, ymin, xmax, ymax)`` in 1-based pixels, as VOC writes
    it; all randomness comes from ``rng``."""
    big = size * _SUPERSAMPLE
    scale = rng.uniform(0.28, 0.4) * big  # animal units to pixels: the animal spans 55-80% of the width
    center = big / 2 + rng.uniform(-0.08, 0.08, size=2) * big + np.array([0.0, -0.1 * scale])
    angle = rng.uniform(-0.25, 0.25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    stretch = np.array([rng.choice([-1.0, 1.0]) * rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1)])  # facing, build

    def to_pixels(points: np.ndarray) -> np.ndarray:
        return (points * stretch) @ rotation.T * scale + center

    coat_shapes, markings, eye = _animal_parts(rng, breed)
    coat = _coverage(coat_shapes, to_pixels, big, scale)
    dark = np.maximum(_coverage(markings, to_pixels, big, scale), _coverage(eye, to_pixels, big, scale)) * coat

    canvas = Image.fromarray(background(rng, size, size).clip(0, 255).astype(np.uint8))
    draw_lines(rng, canvas, int(rng.integers(0, 2)))
    pixels = np.asarray(canvas, dtype=np.float64)
    coat_color = shape_color(rng)
    shading = rng.normal(0, 10, size=3) * np.linspace(-1, 1, size)[:, None, None]
    marking_color = coat_color * rng.uniform(0.25, 0.4)
    pixels = pixels * (1 - coat[:, :, None]) + (coat_color + shading) * coat[:, :, None]
    pixels = pixels * (1 - dark[:, :, None]) + marking_color * dark[:, :, None]
    canvas = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw_lines(rng, canvas, int(rng.integers(0, 2)))  # occluders over the animal, as in the shapes
    noisy = np.asarray(canvas, dtype=np.float64) + rng.normal(0, rng.uniform(2, 6), size=(size, size, 3))

    ys, xs = np.nonzero(coat > 0.5)
    box = (int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8)), box


def voc_annotation(folder: str, stem: str, size: int, box: tuple[int, int, int, int]) -> ET.ElementTree:
    """A Stanford Dogs annotation: PASCAL VOC XML with one object."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder.split("-", 1)[0].removeprefix("n")
    ET.SubElement(root, "filename").text = stem
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "mnet_tasks synthetic breeds"
    dims = ET.SubElement(root, "size")
    for key, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(dims, key).text = str(value)
    ET.SubElement(root, "segment").text = "0"
    obj = ET.SubElement(root, "object")
    for key, value in (("name", folder.split("-", 1)[1]), ("pose", "Unspecified"), ("truncated", "0")):
        ET.SubElement(obj, key).text = value
    ET.SubElement(obj, "difficult").text = "0"
    bndbox = ET.SubElement(obj, "bndbox")
    for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
        ET.SubElement(bndbox, key).text = str(value)
    return ET.ElementTree(root)


def _cell(strings: list[str]) -> np.ndarray:
    """An N x 1 MATLAB cell array of strings, as the Stanford Dogs lists hold their paths."""
    cell = np.empty((len(strings), 1), dtype=object)
    cell[:, 0] = strings
    return cell


def write_split_list(path: Path, entries: list[tuple[str, int]]) -> None:
    """A Stanford Dogs list of ``(image path under Images/, 1-based label)``: ``file_list`` and ``annotation_list``
    (the path without its extension, under Annotation/) as N x 1 cells, ``labels`` N x 1."""
    files = [file for file, _ in entries]
    scipy.io.savemat(
        path,
        {
            "file_list": _cell(files),
            "annotation_list": _cell([file.rsplit(".", 1)[0] for file in files]),
            "labels": np.array([label for _, label in entries], dtype=float).reshape(-1, 1),
        },
    )


def write_breeds(out: Path, params: dict[str, Any]) -> None:
    """Fill ``out`` with the synthetic breeds with ``params``.

    Each image is drawn from its own generator seeded by (seed, split, breed, index): the same parameters give
    byte-identical images and annotations, and the same lists (a .mat file's header holds its creation time).
    """
    counts = {"train": params["train_per_class"], "test": params["test_per_class"]}
    folders = [breed_folder(i) for i in range(params["num_classes"])]
    size = params["image_size"]
    lists: dict[str, list[tuple[str, int]]] = {split: [] for split in SPLITS}
    with tqdm(total=len(folders) * sum(counts.values()), desc="generating synthetic breeds", unit="img") as bar:
        for label, folder in enumerate(folders):
            (out / "Images" / folder).mkdir(parents=True)
            (out / "Annotation" / folder).mkdir(parents=True)
            wnid = folder.split("-", 1)[0]
            for split in SPLITS:
                offset = 0 if split == "train" else counts["train"]  # file numbers run on across splits
                for index in range(counts[split]):
                    seeds = [params["seed"], SPLITS.index(split), label, index]
                    image, box = render_animal_image(np.random.default_rng(seeds), BREEDS[label], size)
                    stem = f"{wnid}_{offset + index:05d}"
                    image.save(out / "Images" / folder / f"{stem}.jpg", quality=JPEG_QUALITY)
                    voc_annotation(folder, stem, size, box).write(out / "Annotation" / folder / stem)
                    lists[split].append((f"{folder}/{stem}.jpg", label + 1))
                    bar.update()
    for split, entries in lists.items():
        write_split_list(out / f"{split}_list.mat", entries)
    write_split_list(out / "file_list.mat", sorted(lists["train"] + lists["test"]))  # every image


BREED_IMAGES = SyntheticData(
    DATASET_NAME,
    GENERATOR_VERSION,
    {
        "num_classes": Parameter(12, 2, len(BREEDS)),
        "train_per_class": Parameter(100, 1),
        "test_per_class": Parameter(30, 1),
        "image_size": Parameter(128, 32),
        "seed": Parameter(0, 0),
    },
    write_breeds,
)
