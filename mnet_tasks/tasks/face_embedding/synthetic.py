"""Synthetic face identities in the layouts of the real face-recognition sets, so face embedding runs offline.

The files are what the real loaders read::

    <root>/train/<identity>/<identity>_0001.jpg ...   CASIA-WebFace / VGGFace2: one folder per training identity
    <root>/unlabeled/000001.jpg ...                    faces of no listed identity: a student learns them by
                                                       distillation only
    <root>/lfw/<Name>/<Name>_0001.jpg ...              LFW, with identities that are not in train/
    <root>/pairs.txt                                   LFW's pairs.txt: identity-disjoint folds of matched and
                                                       mismatched pairs, each pair within one fold's identities
    <root>/pairs_large.txt                             every matched pair of lfw/ and many mismatched ones, no
                                                       header: what TAR at FAR 1e-4 needs

An identity is a fixed draw of face traits (outline, skin, hair and hairstyle, eyes, brows, nose, mouth, ears, and
for some a beard or glasses) from a generator of its own; a photo is that face under a fresh draw of pose, lighting,
expression, background, blur and noise, from a generator seeded by (seed, identity, photo number). The traits are
continuous, so look-alikes exist and verification is not trivial; the images do not depend on the order in which
they are drawn, nor on how many other identities are asked for.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from mnet_tasks.data.drawing import JPEG_QUALITY, background
from mnet_tasks.data.synthetic import Parameter, SyntheticData
from mnet_tasks.tasks.face_embedding.pairs import Pair, photo_path, sample_pairs, write_pairs

DATASET_NAME = "synthetic_identities"
# Bump when the sampling or drawing changes so that old caches are not silently reused.
GENERATOR_VERSION = 1
TRAIN_DIR = "train"
UNLABELED_DIR = "unlabeled"
EVAL_DIR = "lfw"
PAIRS_FILE = "pairs.txt"
LARGE_PAIRS_FILE = "pairs_large.txt"
_SUPERSAMPLE = 4  # drawn larger and box-filtered down for anti-aliased edges
# The first word of every generator's seed after data.synthetic.seed: what the generator draws, then whose.
_TRAITS, _PHOTO, _FOLD_PAIRS, _LARGE_PAIRS = 1, 2, 3, 4
_TRAIN, _EVAL, _UNLABELED = 1, 2, 3

Points = list[tuple[float, float]]

# Colours along which a trait varies continuously (a position on the path, then a little jitter).
SKIN_PATH = ((241, 208, 186), (224, 180, 150), (190, 138, 100), (141, 94, 64), (92, 60, 42))
HAIR_PATH = ((22, 18, 16), (58, 38, 26), (104, 66, 38), (146, 76, 42), (196, 156, 96), (228, 204, 150))
GREY_HAIR = (172, 170, 166)
IRIS_PATH = ((52, 34, 22), (102, 70, 38), (112, 110, 60), (72, 116, 96), (74, 112, 160), (120, 140, 160))


def _on_path(path: tuple[tuple[int, int, int], ...], position: float) -> np.ndarray:
    """The colour at ``position`` in [0, 1] along ``path``, linearly between its stops."""
    stops = np.array(path, dtype=np.float64)
    where = np.clip(position, 0.0, 1.0) * (len(stops) - 1)
    low = min(int(where), len(stops) - 2)
    return stops[low] + (where - low) * (stops[low + 1] - stops[low])


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    red, green, blue = (int(v) for v in np.clip(np.round(colour), 0, 255))
    return red, green, blue


@dataclass(frozen=True)
class Face:
    """One identity's traits. Lengths are in units of the face's half-width, ``v`` pointing down from the face's
    centre; colours are RGB arrays."""

    size: float  # half-width, a share of the image side
    aspect: float  # half-height / half-width
    squareness: float  # the outline's superellipse exponent: 2 is an ellipse
    jaw: float  # how much the lower face narrows towards the chin
    skin: np.ndarray
    hair: np.ndarray
    hair_top: float  # hair volume above the skull
    hair_width: float  # half-width of the hair around the head
    hair_length: float  # where the hair behind the head ends: above 0 short, past the chin long
    hairline: float  # height of the hairline at the middle, a share of the half-height; 0: bald
    temples: float  # how far the hair comes down at the temples, above the eyes
    hairline_arch: float  # exponent of the hairline's curve from the middle to the temples
    part: float  # where the fringe dips, -1 (left) to 1 (right)
    part_depth: float
    eye_y: float
    eye_spacing: float  # half the distance of the eye centres
    eye_width: float  # half-width of one eye
    eye_height: float
    eye_slant: float  # radians, outer corners up when positive
    iris: np.ndarray
    iris_size: float  # iris radius / eye half-width
    brow_gap: float
    brow_thickness: float
    brow_arch: float
    brow_length: float
    brow_tilt: float
    brow: np.ndarray
    nose_length: float  # from the eye line to the nose's lower end
    nose_width: float
    nose_depth: float  # how far the tip stands out: it moves most when the head turns
    mouth_height: float  # the mouth's place between the nose and the chin
    mouth_width: float
    lip_upper: float
    lip_lower: float
    lips: np.ndarray
    ear_size: float
    ear_out: float
    beard: float  # 0: shaven, else how much the beard colour covers the skin
    beard_top: float  # where the beard starts, 0 (under the nose) to 1 (chin only)
    moustache: float  # 0: none, else its density
    glasses: bool
    glasses_roundness: float
    glasses_size: float
    glasses_colour: np.ndarray

    @property
    def nose_y(self) -> float:
        return self.eye_y + self.nose_length

    @property
    def mouth_y(self) -> float:
        return self.nose_y + self.mouth_height * (self.aspect - self.nose_y)


def sample_face(rng: np.random.Generator) -> Face:
    """One identity's traits, drawn from continuous ranges (a few on/off traits: baldness, beard, glasses)."""
    aspect = rng.uniform(1.18, 1.4)
    skin = _on_path(SKIN_PATH, rng.uniform(0, 1) ** 1.3) + rng.normal(0, 6, 3) + np.array([1, 0, -1]) * rng.normal(0, 5)
    if rng.random() < 0.12:
        hair = np.array(GREY_HAIR) * rng.uniform(0.75, 1.1)
    else:
        hair = _on_path(HAIR_PATH, rng.uniform(0, 1) ** 1.6)
    hair = hair + rng.normal(0, 6, 3)
    bald = rng.random() < 0.08
    eye_y = -aspect * rng.uniform(0.1, 0.22)
    beard = rng.random() < 0.22
    glasses = rng.random() < 0.18
    brow = 0.7 * (0.75 * hair) + 0.3 * np.array([40, 30, 24])
    frame = _on_path(((24, 22, 26), (90, 60, 40), (150, 150, 156), (160, 40, 40)), rng.uniform(0, 1) ** 2)
    return Face(
        size=rng.uniform(0.24, 0.28),
        aspect=aspect,
        squareness=rng.uniform(2.0, 2.9),
        jaw=rng.uniform(0.0, 1.0),
        skin=skin,
        hair=hair,
        hair_top=0.0 if bald else rng.uniform(0.04, 0.38),
        hair_width=rng.uniform(1.0, 1.08) if bald else rng.uniform(1.04, 1.32),
        hair_length=rng.uniform(-0.2, 0.2) if bald else rng.uniform(-0.3, 2.2),
        hairline=0.0 if bald else rng.uniform(0.5, 0.92),
        temples=rng.uniform(0.05, 0.35),
        hairline_arch=rng.uniform(1.5, 4.0),
        part=rng.uniform(-1, 1),
        part_depth=rng.uniform(0.0, 0.16),
        eye_y=eye_y,
        eye_spacing=rng.uniform(0.34, 0.46),
        eye_width=rng.uniform(0.13, 0.2),
        eye_height=rng.uniform(0.055, 0.1),
        eye_slant=rng.uniform(-0.12, 0.15),
        iris=_on_path(IRIS_PATH, rng.uniform(0, 1) ** 1.5) + rng.normal(0, 5, 3),
        iris_size=rng.uniform(0.38, 0.52),
        brow_gap=rng.uniform(0.15, 0.26),
        brow_thickness=rng.uniform(0.035, 0.1),
        brow_arch=rng.uniform(0.0, 0.09),
        brow_length=rng.uniform(0.15, 0.24),
        brow_tilt=rng.uniform(-0.08, 0.08),
        brow=brow,
        nose_length=rng.uniform(0.42, 0.62),
        nose_width=rng.uniform(0.13, 0.25),
        nose_depth=rng.uniform(0.12, 0.32),
        mouth_height=rng.uniform(0.38, 0.5),
        mouth_width=rng.uniform(0.26, 0.42),
        lip_upper=rng.uniform(0.025, 0.07),
        lip_lower=rng.uniform(0.035, 0.1),
        lips=skin * rng.uniform(0.6, 0.82) + np.array([30, -6, -4]) * rng.uniform(0.3, 1.2),
        ear_size=rng.uniform(0.18, 0.28),
        ear_out=rng.uniform(0.06, 0.16),
        beard=rng.uniform(0.3, 0.9) if beard else 0.0,
        beard_top=rng.uniform(0.0, 1.0),
        moustache=rng.uniform(0.4, 0.95) if beard and rng.random() < 0.7 else 0.0,
        glasses=glasses,
        glasses_roundness=rng.uniform(0, 1),
        glasses_size=rng.uniform(0.2, 0.28),
        glasses_colour=frame,
    )


class _Camera:
    """Where a point of the face lands in the supersampled image, for one head pose.

    Turning the head (yaw, pitch) is imitated on a cylinder: a point moves sideways by its depth, so the features
    shift and the far side of the face is compressed while the outline (the silhouette) barely moves.
    """

    def __init__(self, cx: float, cy: float, scale: float, yaw: float, pitch: float, roll: float) -> None:
        self.cx, self.cy, self.scale = cx, cy, scale
        self.yaw, self.pitch, self.roll = yaw, pitch, roll

    def __call__(self, u: Any, v: Any, depth: Any = 0.0, outline: bool = False) -> Points:
        u, v, depth = np.broadcast_arrays(np.asarray(u, float), np.asarray(v, float), np.asarray(depth, float))
        z = (0.35 if outline else 0.9) * np.sqrt(np.clip(1 - u**2, 0, None)) + depth
        x = (u if outline else u * np.cos(self.yaw)) + z * np.sin(self.yaw)
        y = v - z * np.sin(self.pitch)
        cos, sin = np.cos(self.roll), np.sin(self.roll)
        xs = self.cx + self.scale * (x * cos - y * sin)
        ys = self.cy + self.scale * (x * sin + y * cos)
        return list(zip(xs.ravel().tolist(), ys.ravel().tolist(), strict=True))


def _ellipse(cu: float, cv: float, ru: float, rv: float, points: int = 28) -> tuple[np.ndarray, np.ndarray]:
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return cu + ru * np.cos(angles), cv + rv * np.sin(angles)


def _outline(face: Face, points: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """The face's outline from the right side clockwise on screen (down first): a superellipse whose lower half
    narrows towards the chin by the jaw trait."""
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    power = 2 / face.squareness
    u = np.sign(np.cos(t)) * np.abs(np.cos(t)) ** power
    v = face.aspect * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** power
    lower = np.clip(v / face.aspect, 0, None)
    u = u * (1 - 0.42 * face.jaw * lower**2 - 0.1 * lower**4) * (1 - 0.08 * np.clip(-v / face.aspect, 0, None) ** 2)
    return u, v


def render_photo(face: Face, rng: np.random.Generator, size: int) -> Image.Image:
    """One photo of ``face``: pose, expression, lighting, background, blur and noise drawn from ``rng``."""
    s = _SUPERSAMPLE
    big = size * s
    # pose: in-plane roll, small yaw and pitch, scale and a shift of a few percent
    yaw, pitch = rng.uniform(-0.3, 0.3), rng.uniform(-0.12, 0.12)
    roll = np.deg2rad(rng.uniform(-12, 12))
    a = big * face.size * rng.uniform(0.92, 1.08)
    cx, cy = big * (0.5 + rng.uniform(-0.035, 0.035, 2) + np.array([0, 0.02]))
    cam = _Camera(cx, cy, a, yaw, pitch, roll)
    # expression
    smile = rng.uniform(-0.3, 1.0)
    mouth_open = 0.0 if rng.random() < 0.55 else rng.uniform(0.0, 0.13)
    eyes_open = 0.12 if rng.random() < 0.06 else rng.uniform(0.55, 1.05)
    brow_raise = rng.uniform(-0.03, 0.07)
    gaze = rng.uniform(-0.3, 0.3, 2) * np.array([1.0, 0.3])
    shirt = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.7), rng.uniform(0.15, 0.9))) * 255

    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    skin, shade = face.skin, face.skin * 0.82
    line = max(1, round(a * 0.03))

    # body, hair behind the head, neck, ears
    draw.polygon(cam(*_ellipse(0, face.aspect + 1.55, 2.5, 1.0, 40), outline=True), fill=_rgb(shirt))
    hair = _hair_behind(face)
    draw.polygon(cam(*hair, outline=True), fill=_rgb(face.hair))
    neck_v = np.array([0.0, face.aspect + 1.2, face.aspect + 1.2, 0.0])
    draw.polygon(cam(np.array([-0.5, -0.5, 0.5, 0.5]), neck_v, outline=True), fill=_rgb(shade))
    for side in (-1, 1):
        eu, ev = _ellipse(side * 0.97, face.eye_y + 0.2, 0.1 + face.ear_out, face.ear_size, 20)
        draw.polygon(cam(eu, ev, -0.15, outline=True), fill=_rgb(skin * 0.9))  # a little behind the cheeks

    # the face, its beard, the fringe
    outline_u, outline_v = _outline(face)
    draw.polygon(cam(outline_u, outline_v, outline=True), fill=_rgb(skin))
    if face.beard:
        _draw_beard(draw, cam, face, outline_u, outline_v)
    if face.hairline:
        _draw_fringe(draw, cam, face, outline_u, outline_v)

    # eyes, brows, nose, mouth, glasses
    for side in (-1, 1):
        _draw_eye(draw, cam, face, side, eyes_open, gaze, line)
        _draw_brow(draw, cam, face, side, brow_raise)
    _draw_nose(draw, cam, face, line)
    _draw_mouth(draw, cam, face, smile, mouth_open, line)
    if face.glasses:
        _draw_glasses(draw, cam, face, line)

    # Shrink (premultiplied, so edges blend with the background, not with black); light the head from one side.
    head = np.asarray(layer.convert("RGBa").reduce(s), dtype=np.float64)
    ys, xs = np.mgrid[0:size, 0:size]
    angle, strength = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.45)
    toward = ((xs - cx / s) * np.cos(angle) + (ys - cy / s) * np.sin(angle)) / (1.6 * a / s)
    light = np.clip(1 + strength * toward, 0.45, 1.6)[:, :, None]
    alpha = head[:, :, 3:] / 255
    pixels = background(rng, size, size) * (1 - alpha) + head[:, :, :3] * light
    # exposure and white balance of the camera, then its blur and noise
    pixels = pixels * rng.uniform(0.78, 1.15) * (1 + rng.normal(0, 0.04, 3))
    photo = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.8) * size / 112))
    noisy = np.asarray(photo, dtype=np.float64) + rng.normal(0, rng.uniform(1, 5), (size, size, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def _hair_behind(face: Face) -> tuple[np.ndarray, np.ndarray]:
    """The hair around the head: a dome over the skull, with sides that fall to ``hair_length``."""
    top = face.aspect + face.hair_top
    centre = -0.15 * face.aspect
    angles = np.linspace(np.pi, 2 * np.pi, 30)
    u = face.hair_width * np.cos(angles)
    v = centre + (top + centre) * np.sin(angles)
    bottom = max(face.hair_length, centre)
    across = np.linspace(1, -1, 12)
    u = np.concatenate([u, face.hair_width * 0.97 * across])
    v = np.concatenate([v, bottom + 0.12 * (1 - across**2)])
    return u, v


def _draw_fringe(draw: ImageDraw.ImageDraw, cam: _Camera, face: Face, u: np.ndarray, v: np.ndarray) -> None:
    """Hair over the forehead: the outline above the temples, closed by the hairline."""
    middle = -face.hairline * face.aspect
    middle = min(middle, face.eye_y - face.brow_gap - face.brow_thickness - 0.1)
    temple = face.eye_y - face.temples
    top = np.nonzero(v <= temple)[0]
    if len(top) < 3 or temple <= middle:
        return
    edge_u, edge_v = u[top], v[top]  # from the left temple over the top to the right one
    right, left = edge_u[-1], edge_u[0]
    hair_u = np.linspace(right, left, 24)
    reach = np.where(hair_u >= 0, hair_u / right, hair_u / left)
    hair_v = middle + (temple - middle) * np.abs(reach) ** face.hairline_arch
    hair_v = hair_v - face.part_depth * np.exp(-(((hair_u - 0.6 * face.part) / 0.22) ** 2))
    hair_v = np.maximum(hair_v, middle - face.part_depth)
    draw.polygon(cam(edge_u, edge_v, outline=True) + cam(hair_u, hair_v), fill=_rgb(face.hair))


def _draw_beard(draw: ImageDraw.ImageDraw, cam: _Camera, face: Face, u: np.ndarray, v: np.ndarray) -> None:
    """Beard colour over the lower face, below a line between the nose and the chin; a moustache over the lip."""
    start = face.nose_y + 0.04 + face.beard_top * (face.aspect - face.nose_y) * 0.55
    lower = np.nonzero(v >= start)[0]
    colour = face.skin + face.beard * (face.hair * 0.8 - face.skin)
    if len(lower) >= 3:
        across = np.linspace(u[lower[-1]], u[lower[0]], 12)
        draw.polygon(cam(u[lower], v[lower], outline=True) + cam(across, start), fill=_rgb(colour))
    if face.moustache:
        across = np.linspace(-1, 1, 16)
        width = face.mouth_width * 1.1
        bottom = face.mouth_y - face.lip_upper + 0.04 * across**2  # drooping at the ends
        top = np.maximum(bottom - (0.04 + 0.08 * face.moustache) * (1 - 0.6 * across**2), face.nose_y + 0.03)
        moustache = face.skin + face.moustache * (face.hair * 0.75 - face.skin)
        points = cam(width * across, top, 0.06) + cam(width * across[::-1], bottom[::-1], 0.06)
        draw.polygon(points, fill=_rgb(moustache))


def _draw_eye(
    draw: ImageDraw.ImageDraw,
    cam: _Camera,
    face: Face,
    side: int,
    opening: float,
    gaze: np.ndarray,
    line: int,
) -> None:
    """An almond of eye white, the iris and pupil clipped to the lids, and the lash line."""
    t = np.linspace(-1, 1, 17)
    w, h = face.eye_width, face.eye_height * opening
    upper = -h * (1 - t**2) ** 0.8
    lower = 0.75 * h * (1 - t**2)

    def place(x: np.ndarray, y: np.ndarray) -> Points:
        # outer corner at x = +w; mirrored for the left eye, tilted by the slant
        cos, sin = np.cos(face.eye_slant), np.sin(face.eye_slant)
        return cam(side * (face.eye_spacing + x * cos + y * sin), face.eye_y - x * sin + y * cos, 0.02)

    x = t * w
    draw.polygon(place(np.concatenate([x, x[::-1]]), np.concatenate([upper, lower[::-1]])), fill=(236, 234, 228))
    if opening > 0.3:
        for radius, colour in ((face.iris_size * w, face.iris), (0.45 * face.iris_size * w, np.array([14, 10, 10]))):
            iu, iv = _ellipse(gaze[0] * w, gaze[1] * h, radius, radius, 24)
            iu = np.clip(iu, -w, w)
            inside = 1 - (iu / w) ** 2
            iv = np.clip(iv, -h * inside**0.8, 0.75 * h * inside)
            draw.polygon(place(iu, iv), fill=_rgb(colour))
    draw.line(place(x, upper), fill=(34, 26, 24), width=max(1, round(line * 1.2)), joint="curve")


def _draw_brow(draw: ImageDraw.ImageDraw, cam: _Camera, face: Face, side: int, raise_: float) -> None:
    """A brow that arches over the eye and thins towards its outer end."""
    t = np.linspace(-1, 1, 14)  # inner end to outer end
    centre = face.eye_y - face.brow_gap - raise_ - face.brow_arch * (1 - t**2) - face.brow_tilt * t
    half = 0.5 * face.brow_thickness * (1 - 0.55 * np.clip(t, 0, None))
    u = side * (face.eye_spacing + 0.02 + t * face.brow_length)
    draw.polygon(cam(u, centre - half, 0.04) + cam(u[::-1], (centre + half)[::-1], 0.04), fill=_rgb(face.brow))


def _draw_nose(draw: ImageDraw.ImageDraw, cam: _Camera, face: Face, line: int) -> None:
    """The bridge's shadow, the nose's rounded lower end with its tip, and the nostrils; the tip stands out most."""
    y, w, d = face.nose_y, face.nose_width, face.nose_depth
    bridge = np.linspace(0, 1, 8)
    draw.line(
        cam(-0.08 - 0.3 * w * bridge, face.eye_y + 0.08 + bridge * (face.nose_length - 0.2), d * bridge),
        fill=_rgb(face.skin * 0.84),
        width=line,
    )
    draw.polygon(cam(*_ellipse(0, y - 0.06, w, 0.085), 0.6 * d), fill=_rgb(face.skin * 0.9))
    draw.polygon(cam(*_ellipse(0, y - 0.09, 0.45 * w, 0.07), d), fill=_rgb(face.skin * 1.04))
    for side in (-1, 1):
        draw.polygon(
            cam(*_ellipse(side * 0.5 * w, y - 0.02, 0.25 * w, 0.028, 16), 0.5 * d), fill=_rgb(face.skin * 0.42)
        )


def _draw_mouth(draw: ImageDraw.ImageDraw, cam: _Camera, face: Face, smile: float, opening: float, line: int) -> None:
    """Two lips around a centre line that curves up with the smile; an open mouth shows its inside (and teeth)."""
    t = np.linspace(-1, 1, 21)
    u = t * face.mouth_width * (1 + 0.12 * max(smile, 0))
    centre = face.mouth_y - 0.09 * smile * t**2
    body = (1 - t**2) ** 0.6
    gap = 0.5 * opening * (1 - t**2) ** 0.7
    bow = 1 - 0.35 * np.exp(-((t / 0.18) ** 2))  # the dip of the upper lip's middle
    upper_inner, lower_inner = centre - gap, centre + gap
    depth = 0.05
    lips = _rgb(face.lips)
    if opening > 0.01:
        draw.polygon(cam(u, upper_inner, depth) + cam(u[::-1], lower_inner[::-1], depth), fill=(70, 24, 28))
        if smile > 0.3:
            teeth = np.minimum(upper_inner + 0.05, lower_inner)
            draw.polygon(cam(u, upper_inner, depth) + cam(u[::-1], teeth[::-1], depth), fill=(226, 220, 206))
    else:
        draw.line(cam(u, centre, depth), fill=_rgb(face.lips * 0.55), width=line, joint="curve")
    draw.polygon(cam(u, lower_inner, depth) + cam(u[::-1], (lower_inner + face.lip_lower * body)[::-1], depth), lips)
    draw.polygon(
        cam(u, upper_inner - face.lip_upper * body * bow, depth) + cam(u[::-1], upper_inner[::-1], depth), lips
    )


def _draw_glasses(draw: ImageDraw.ImageDraw, cam: _Camera, face: Face, line: int) -> None:
    """Two frames round the eyes, from round to rectangular, with their bridge and the temples to the ears."""
    angles = np.linspace(0, 2 * np.pi, 33)
    power = 2 / (2 + 2.5 * (1 - face.glasses_roundness))
    half_w, half_h = face.glasses_size, face.glasses_size * 0.78
    ring_u = half_w * np.sign(np.cos(angles)) * np.abs(np.cos(angles)) ** power
    ring_v = half_h * np.sign(np.sin(angles)) * np.abs(np.sin(angles)) ** power
    colour, width = _rgb(face.glasses_colour), max(1, round(line * 1.3))
    for side in (-1, 1):
        centre = side * face.eye_spacing
        draw.line(cam(centre + ring_u, face.eye_y + ring_v, 0.12), fill=colour, width=width, joint="curve")
        outer = centre + side * half_w
        draw.line(cam([outer, side * 1.0], [face.eye_y - 0.05, face.eye_y], [0.12, 0.0]), fill=colour, width=width)
    inner = face.eye_spacing - half_w
    draw.line(cam([-inner, 0, inner], face.eye_y - 0.06, [0.12, 0.16, 0.12]), fill=colour, width=width)


def check_parameters(params: dict[str, Any]) -> None:
    """Refuse, naming the ``data.synthetic`` key, what the per-key ranges let through but the pair lists cannot
    hold: folds of unequal size, or more pairs than the photos give."""
    identities, folds, photos = params["eval_identities"], params["folds"], params["eval_photos_per_identity"]
    if folds > identities // 2:
        raise ValueError(
            f"{DATASET_NAME}: data.synthetic.folds must be at most {identities // 2}, leaving 2 of the "
            f"{identities} eval identities in each fold for mismatched pairs, got {folds}"
        )
    if identities % folds:
        raise ValueError(
            f"{DATASET_NAME}: data.synthetic.eval_identities must be a multiple of data.synthetic.folds ({folds}): "
            f"every fold holds as many identities, got {identities}"
        )
    per_fold = identities // folds
    matched = per_fold * photos * (photos - 1) // 2
    mismatched = per_fold * (per_fold - 1) // 2 * photos**2
    if params["pairs_per_fold"] > min(matched, mismatched):
        raise ValueError(
            f"{DATASET_NAME}: data.synthetic.pairs_per_fold must be at most {min(matched, mismatched)}: a fold's "
            f"{per_fold} identities of {photos} photos give {matched} matched and {mismatched} mismatched pairs, "
            f"got {params['pairs_per_fold']}"
        )
    possible = identities * (identities - 1) // 2 * photos**2
    if params["large_mismatched"] > possible:
        raise ValueError(
            f"{DATASET_NAME}: data.synthetic.large_mismatched must be at most {possible}, the mismatched pairs of "
            f"{identities} identities of {photos} photos, got {params['large_mismatched']}"
        )


def _rng(*words: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(words)))


def train_names(count: int) -> list[str]:
    """The training identities' folder names, as CASIA-WebFace numbers its people."""
    return [f"id_{number:05d}" for number in range(1, count + 1)]


def eval_names(count: int) -> list[str]:
    """The eval identities' names, in LFW's pattern (no spaces: ``Person_0001/Person_0001_0001.jpg``)."""
    return [f"Person_{number:04d}" for number in range(1, count + 1)]


def write_identities(folder: Path, params: dict[str, Any]) -> None:
    """Fill ``folder`` with the synthetic identities with ``params`` (layout in the module's docstring).

    Eval identity ``k`` (from 0) belongs to fold ``k // (eval_identities / folds)``. The pair lists are drawn
    first, so a bad parameter is refused before any image is drawn.
    """
    check_parameters(params)
    seed, size = params["seed"], params["image_size"]
    train = dict.fromkeys(train_names(params["train_identities"]), params["photos_per_identity"])
    people = dict.fromkeys(eval_names(params["eval_identities"]), params["eval_photos_per_identity"])

    names, per_fold = list(people), params["eval_identities"] // params["folds"]
    folds: list[Pair] = []
    for fold in range(params["folds"]):
        members = {name: people[name] for name in names[fold * per_fold : (fold + 1) * per_fold]}
        count = params["pairs_per_fold"]
        folds += sample_pairs(members, count, count, _rng(seed, _FOLD_PAIRS, fold), fold=fold)
    write_pairs(folder / PAIRS_FILE, folds, folds=params["folds"])
    large = sample_pairs(people, None, params["large_mismatched"], _rng(seed, _LARGE_PAIRS))
    write_pairs(folder / LARGE_PAIRS_FILE, large)

    total = sum(train.values()) + params["unlabeled_images"] + sum(people.values())
    with tqdm(total=total, desc="generating synthetic identities", unit="img") as bar:
        for directory, group, photos in ((TRAIN_DIR, _TRAIN, train), (EVAL_DIR, _EVAL, people)):
            for index, (name, count) in enumerate(photos.items(), 1):
                face = sample_face(_rng(seed, _TRAITS, group, index))
                (folder / directory / name).mkdir(parents=True)
                for number in range(1, count + 1):
                    image = render_photo(face, _rng(seed, _PHOTO, group, index, number), size)
                    image.save(folder / directory / photo_path(name, number), quality=JPEG_QUALITY)
                    bar.update()
        (folder / UNLABELED_DIR).mkdir()
        for number in range(1, params["unlabeled_images"] + 1):
            face = sample_face(_rng(seed, _TRAITS, _UNLABELED, number))
            image = render_photo(face, _rng(seed, _PHOTO, _UNLABELED, number, 1), size)
            image.save(folder / UNLABELED_DIR / f"{number:06d}.jpg", quality=JPEG_QUALITY)
            bar.update()


IDENTITIES = SyntheticData(
    DATASET_NAME,
    GENERATOR_VERSION,
    {
        "train_identities": Parameter(150, 2),
        "photos_per_identity": Parameter(20, 1),
        "unlabeled_images": Parameter(1000, 0),
        "eval_identities": Parameter(200, 20),  # a multiple of folds
        "eval_photos_per_identity": Parameter(6, 2),
        "folds": Parameter(10, 1),
        "pairs_per_fold": Parameter(100, 1),  # matched pairs, and as many mismatched ones, in each fold
        "large_mismatched": Parameter(100_000, 0),
        "image_size": Parameter(112, 32),  # square images
        "seed": Parameter(0, 0),
    },
    write_identities,
)
