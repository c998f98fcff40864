"""A synthetic geo-tagged photo collection in the MP-16 / Im2GPS list layout, so geolocation runs without downloads.

Photo locations are drawn as real collections are: most around a few dozen popular cities (weighted, each with
its own spread), the rest thinly over the continents. Each picture is a landscape whose look is a smooth
function of where it was taken, plus noise:

- sky colour: the hue turns with the signed latitude (cyan in the south, violet in the north) and pales towards
  the poles ("climate"); the sun stands higher near the equator; snow covers more ground at high latitudes;
- ground colour: the hue goes once round the colour wheel with the longitude; field stripes get denser or
  sparser with longitude and latitude;
- mountains, trees and clouds: their height and numbers follow smooth fields over the sphere.

Everything that carries location is left-right symmetric and survives mild colour jitter as relative colour, so
the standard training augmentation (flips, colour jitter) does not destroy it. Written as::

    <root>/train.csv, <root>/test.csv      image,latitude,longitude (image paths relative to <root>)
    <root>/train/000000.jpg ...            <root>/test/000000.jpg ...
"""

from __future__ import annotations

import colorsys
import csv
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from mnet_tasks.data.drawing import JPEG_QUALITY
from mnet_tasks.data.synthetic import Parameter, SyntheticData

DATASET_NAME = "synthetic_geo"
# Bump when the sampling or drawing changes so that old caches are not silently reused.
GENERATOR_VERSION = 1
SPLITS = ("train", "test")
KM_PER_DEGREE = 111.2

# Popular places of a photo-sharing site: (latitude, longitude, relative photo weight, spread in km).
CITIES = (
    (40.71, -74.01, 10, 40),  # New York
    (51.51, -0.13, 10, 40),  # London
    (48.86, 2.35, 8, 30),  # Paris
    (37.77, -122.42, 7, 50),  # San Francisco
    (34.05, -118.24, 6, 60),  # Los Angeles
    (35.68, 139.69, 6, 50),  # Tokyo
    (41.90, 12.50, 5, 30),  # Rome
    (52.52, 13.40, 4, 30),  # Berlin
    (41.39, 2.17, 4, 25),  # Barcelona
    (41.88, -87.63, 4, 40),  # Chicago
    (52.37, 4.90, 3, 25),  # Amsterdam
    (45.44, 12.32, 3, 15),  # Venice
    (55.76, 37.62, 3, 40),  # Moscow
    (41.01, 28.98, 3, 30),  # Istanbul
    (39.90, 116.41, 3, 50),  # Beijing
    (31.23, 121.47, 2, 50),  # Shanghai
    (37.57, 126.98, 2, 40),  # Seoul
    (1.35, 103.82, 2, 20),  # Singapore
    (13.76, 100.50, 2, 40),  # Bangkok
    (-33.87, 151.21, 3, 50),  # Sydney
    (-37.81, 144.96, 1, 40),  # Melbourne
    (-22.91, -43.17, 2, 40),  # Rio de Janeiro
    (-34.60, -58.38, 1, 40),  # Buenos Aires
    (19.43, -99.13, 2, 50),  # Mexico City
    (43.65, -79.38, 2, 40),  # Toronto
    (49.28, -123.12, 2, 40),  # Vancouver
    (21.31, -157.86, 1, 60),  # Honolulu
    (64.15, -21.94, 1, 80),  # Reykjavik
    (30.04, 31.24, 1, 40),  # Cairo
    (-33.92, 18.42, 1, 40),  # Cape Town
    (-1.29, 36.82, 1, 80),  # Nairobi
    (28.61, 77.21, 1, 50),  # Delhi
    (19.08, 72.88, 1, 40),  # Mumbai
    (25.20, 55.27, 1, 30),  # Dubai
    (-12.05, -77.04, 1, 60),  # Lima
    (59.33, 18.07, 1, 30),  # Stockholm
)
# Rough continental boxes (south, north, west, east) for the photos taken away from the cities.
LAND_BOXES = (
    (25.0, 60.0, -125.0, -70.0),  # North America
    (-40.0, 5.0, -75.0, -40.0),  # South America
    (36.0, 62.0, -10.0, 30.0),  # Europe
    (-30.0, 30.0, -15.0, 40.0),  # Africa
    (10.0, 55.0, 60.0, 140.0),  # Asia
    (-38.0, -15.0, 115.0, 150.0),  # Australia
)


def sample_locations(rng: np.random.Generator, count: int, background_share: float) -> np.ndarray:
    """``(count, 2)`` latitude/longitude in degrees: city photos, and a ``background_share`` over the land boxes."""
    in_background = rng.random(count) < background_share
    weights = np.array([city[2] for city in CITIES], dtype=np.float64)
    city = rng.choice(len(CITIES), size=count, p=weights / weights.sum())
    centers = np.array([city[:2] for city in CITIES])[city]
    # Heavy-tailed spreads: mostly the city itself, sometimes a day trip away.
    spread_km = np.array([city[3] for city in CITIES])[city] * np.exp(rng.normal(0.0, 0.7, count))
    north_km, east_km = rng.normal(size=(2, count)) * spread_km
    lat = np.clip(centers[:, 0] + north_km / KM_PER_DEGREE, -89.0, 89.0)
    lon = centers[:, 1] + east_km / (KM_PER_DEGREE * np.cos(np.deg2rad(lat)))

    boxes = np.array(LAND_BOXES)
    south, north = np.deg2rad(boxes[:, 0]), np.deg2rad(boxes[:, 1])
    areas = (np.sin(north) - np.sin(south)) * (boxes[:, 3] - boxes[:, 2])
    box = boxes[rng.choice(len(boxes), size=count, p=areas / areas.sum())]
    # Uniform in area within the box: uniform in sin(latitude).
    box_lat = np.rad2deg(np.arcsin(rng.uniform(np.sin(np.deg2rad(box[:, 0])), np.sin(np.deg2rad(box[:, 1])))))
    box_lon = rng.uniform(box[:, 2], box[:, 3])

    lat = np.where(in_background, box_lat, lat)
    lon = np.where(in_background, box_lon, lon)
    return np.stack([lat, (lon + 180.0) % 360.0 - 180.0], axis=1)


def _fields(lat: float, lon: float) -> dict[str, float]:
    """Smooth functions of the location on the sphere (continuous across the antimeridian), each in [0, 1]."""
    phi, lam = np.deg2rad(lat), np.deg2rad(lon)
    x, y, z = np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)
    return {
        "terrain": 0.5 + 0.5 * np.sin(2.3 * x - 1.9 * y + 2.9 * z + 0.4),
        "vegetation": 0.5 + 0.5 * np.sin(-1.7 * x + 2.6 * y + 1.1 * z + 1.3),
        "cloudiness": 0.5 + 0.5 * np.sin(1.4 * x + 1.2 * y - 2.4 * z + 2.1),
        "stripes": 0.5 + 0.5 * np.cos(2 * lam) * np.cos(phi),
        "snow": float(np.clip((abs(lat) - 50.0) / 25.0, 0.0, 1.0)),
    }


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, float(np.clip(saturation, 0, 1)), float(np.clip(value, 0, 1))))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid, upsampled bilinearly."""
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((size, size), Image.BILINEAR), dtype=np.float64) / 255.0


def render_geo_image(rng: np.random.Generator, lat: float, lon: float, size: int) -> Image.Image:
    """One landscape photo taken at ``(lat, lon)``; all randomness comes from ``rng``."""
    field = _fields(lat, lon)
    ys = np.arange(size, dtype=np.float64)[:, None] / (size - 1)
    xs = np.arange(size, dtype=np.float64)[None, :] / (size - 1)
    sin_lat = np.sin(np.deg2rad(lat))

    # Sky: zenith to horizon gradient; hue from the signed latitude, saturation falling towards the poles.
    horizon = rng.uniform(0.42, 0.58)
    sky_hue = 0.58 + 0.11 * sin_lat + rng.normal(0, 0.008)
    zenith = _hsv(sky_hue, 0.8 - 0.5 * abs(sin_lat) ** 1.5 + rng.normal(0, 0.04), 0.9 + rng.normal(0, 0.04))
    haze = _hsv(sky_hue, 0.2, 0.97)
    depth = np.clip(ys / horizon, 0, 1)[:, :, None]
    image = np.broadcast_to(zenith * (1 - depth) + haze * depth, (size, size, 3)).copy()

    # Sun: higher in the sky near the equator (with a season's worth of noise), sometimes behind clouds.
    if rng.random() < 0.8:
        elevation = np.clip(90.0 - abs(lat) + rng.normal(0, 8), 3, 88) / 90.0
        sun_x, sun_y = rng.uniform(0.1, 0.9), horizon * (1.0 - 0.9 * elevation)
        glow = np.exp(-((xs - sun_x) ** 2 + (ys - sun_y) ** 2) / (2 * 0.035**2))[:, :, None]
        image = image * (1 - glow) + _hsv(0.13, 0.35 - 0.25 * elevation, 1.0) * glow

    # Clouds: soft grey-white blobs, more of them where the cloudiness field is high.
    cloud = _smooth_noise(rng, size, 6)
    cover = np.clip((cloud - (0.85 - 0.45 * field["cloudiness"])) * 4, 0, 1) * (ys < horizon)
    image = image * (1 - cover[:, :, None]) + rng.uniform(0.8, 0.95) * cover[:, :, None]

    # Mountains: a ridge above the horizon whose height follows the terrain field; snow caps at high latitude.
    phases = rng.uniform(0, 2 * np.pi, 3)
    ridge = sum(np.sin((k + 1.5) * 2 * np.pi * xs[0] + p) / (k + 1) for k, p in enumerate(phases))
    ridge_top = horizon - (0.03 + 0.17 * field["terrain"]) * (0.6 + 0.4 * ridge / 1.9)
    mountain = (ys >= ridge_top[None, :]) & (ys < horizon)
    rock = _hsv(sky_hue + 0.03, 0.25, 0.55 + rng.normal(0, 0.04))
    image[mountain] = rock
    snowline = ridge_top[None, :] + (0.02 + 0.1 * field["snow"]) * (horizon - ridge_top[None, :]) * 3
    image[mountain & (ys < snowline) & (field["snow"] > 0)] = 0.95

    # Ground: hue once round the colour wheel with longitude; field stripes; snow patches at high latitude.
    ground = ys >= horizon
    ground_hue = (lon + 180.0) / 360.0 + rng.normal(0, 0.008)
    base = _hsv(ground_hue, 0.6 + rng.normal(0, 0.05), 0.6 + rng.normal(0, 0.05))
    frequency = 3 + 14 * field["stripes"]
    stripes = 1 + 0.18 * np.sin(2 * np.pi * frequency * (ys - horizon) + rng.uniform(0, 2 * np.pi))
    texture = 0.9 + 0.2 * _smooth_noise(rng, size, 12)
    soil = base[None, None, :] * (stripes * texture)[:, :, None]
    snow = (_smooth_noise(rng, size, 8) < field["snow"])[:, :, None] * ground[:, :, None]
    soil = np.where(snow, 0.93, soil)
    image = np.where(ground[:, :, None], soil, image)

    canvas = Image.fromarray((image.clip(0, 1) * 255).astype(np.uint8))
    # Trees: dark cones standing on the ground, more where the vegetation field is high and no snow lies.
    draw = ImageDraw.Draw(canvas)
    leaf = tuple(int(v) for v in _hsv(0.3 + rng.normal(0, 0.02), 0.6, 0.3) * 255)
    for _ in range(rng.poisson(14 * field["vegetation"] * (1 - 0.7 * field["snow"]))):
        base_y = rng.uniform(horizon + 0.02, 1.0) * size
        height = (0.05 + 0.25 * (base_y / size - horizon)) * size
        center = rng.uniform(0, size)
        draw.polygon([(center, base_y - height), (center - height / 3, base_y), (center + height / 3, base_y)], leaf)

    # Camera: exposure, colour balance and sensor noise.
    pixels = np.asarray(canvas, dtype=np.float64) * rng.uniform(0.85, 1.15) * rng.normal(1.0, 0.03, 3)
    pixels += rng.normal(0, rng.uniform(2, 8), pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _split_rng(seed: int, split: str, *index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), *index]))


def _write_split(folder: Path, split: str, size: int, params: dict, bar: tqdm) -> None:
    """``<split>.csv`` and its pictures under ``<split>/``."""
    (folder / split).mkdir()
    locations = sample_locations(_split_rng(params["seed"], split), size, params["background_share"])
    with open(folder / f"{split}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "latitude", "longitude"])
        for index, (lat, lon) in enumerate(locations):
            name = f"{split}/{index:06d}.jpg"
            image = render_geo_image(_split_rng(params["seed"], split, index), lat, lon, params["image_size"])
            image.save(folder / name, quality=JPEG_QUALITY)
            writer.writerow([name, f"{lat:.6f}", f"{lon:.6f}"])
            bar.update()


def write_geo(folder: Path, params: dict[str, Any]) -> None:
    """Fill ``folder`` with the synthetic geo dataset with ``params``.

    Deterministic per seed: each split's locations come from one generator and each picture from its own.
    """
    sizes = {"train": params["train_size"], "test": params["test_size"]}
    with tqdm(total=sum(sizes.values()), desc="generating synthetic geo photos", unit="img") as bar:
        for split in SPLITS:
            _write_split(folder, split, sizes[split], params, bar)


GEO_PHOTOS = SyntheticData(
    DATASET_NAME,
    GENERATOR_VERSION,
    {
        "train_size": Parameter(4000, 1),
        "test_size": Parameter(500, 1),
        "image_size": Parameter(128, 32),
        "background_share": Parameter(0.15, 0.0, 1.0),
        "seed": Parameter(0, 0),
    },
    write_geo,
)
