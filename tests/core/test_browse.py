"""The dataset browser: each task's samples as the model receives them, labelled through the task's adapter, and
the grid they are drawn in."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import s2geometry as s2
import torch
from conftest import QUICK, tiny_data
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms import v2

from mnet_tasks.adapter import BrowseSample
from mnet_tasks.browse import MARGIN, MIN_TILE_WIDTH, browse, collect_samples, display_pixels, sheet_layout
from mnet_tasks.config import ConfigError, compose_config
from mnet_tasks.data.transforms import normalize_images
from mnet_tasks.tasks.attributes.data import read_attribute_file
from mnet_tasks.tasks.attributes.synthetic import ATTRIBUTE_FILE
from mnet_tasks.tasks.face_embedding.adapter import FaceEmbeddingAdapter

PLUGIN_EXAMPLE = Path(__file__).resolve().parents[1] / "plugin_example"

# Each task's built-in data, tiny (the tests' shared sets), at an input size that keeps the pictures small.
TASKS = {
    "classification": QUICK,
    "finegrained": [
        "task=finegrained",
        "backbone.resolution=64",
        "data.synthetic.num_classes=6",
        "data.synthetic.train_per_class=5",
        "data.synthetic.test_per_class=3",
        "data.synthetic.image_size=64",
    ],
    "detection": tiny_data("detection"),
    "attributes": [*tiny_data("attributes"), "backbone.resolution=64"],
    "geolocalization": [*tiny_data("geolocalization"), "backbone.resolution=64"],
    "face_embedding": [*tiny_data("face_embedding"), "backbone.resolution=64", "task.monitor=val/accuracy"],
}
SHOWN, COLUMNS = 6, 4  # two rows, the second half full (one for detection's 4 validation images)


def browse_config(task: str, data_dir: Path, tmp_path: Path, *overrides: str):
    return compose_config(
        [
            *TASKS[task],
            "data.num_workers=0",
            "data.batch_size=4",  # the samples come from two batches
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={tmp_path}",
            f"n={SHOWN}",
            f"columns={COLUMNS}",
            *overrides,
        ],
        "browse",
    )


def expected_labels(task: str, datamodule, count: int) -> list[tuple[list[str], list[str]]]:
    """The first ``count`` validation samples' captions and box labels, read from the dataset's own files rather
    than through the adapter."""
    val = datamodule.val_set
    if task in ("classification", "finegrained"):  # the class is the image's folder
        return [([path.parent.name], []) for path, _ in val.samples[:count]]
    if task == "detection":  # each annotation's category, in the file's order
        coco = val.coco
        expected = []
        for record in val.records[:count]:
            names = [coco.cats[a["category_id"]]["name"] for a in coco.imgToAnns.get(record.image_id, [])]
            boxes = "box" if len(names) == 1 else "boxes"
            expected.append(([f"image {record.image_id}: {len(names)} {boxes}"], names))
        return expected
    if task == "attributes":  # the attribute file's 1s
        table = read_attribute_file(datamodule.data_dir / ATTRIBUTE_FILE)
        expected = []
        for path, _ in val.samples[:count]:
            row = table.labels[table.images.index(path.name)]
            present = ", ".join(name for name, value in zip(table.names, row, strict=True) if value == 1)
            expected.append(([present or "no attribute present"], []))
        return expected
    if task == "face_embedding":  # LFW's <name>/<name>_<number>.jpg
        return [([f"{path.parent.name} #{int(path.stem.rsplit('_', 1)[1])}"], []) for path, _ in val.samples[:count]]
    assert task == "geolocalization"  # the list's location, and the cell of each partition that holds it
    with open(datamodule.data_dir / "test.csv", newline="") as file:
        rows = list(csv.DictReader(file))[:count]
    partitions = datamodule.head_kwargs()["partitions"]
    expected = []
    for row in rows:
        latitude, longitude = float(row["latitude"]), float(row["longitude"])
        leaf = s2.S2CellId(s2.S2LatLng.FromDegrees(latitude, longitude))
        caption = [f"{latitude:.3f}, {longitude:.3f}"]
        for partition in partitions:
            holding = [token for token in partition["tokens"] if s2.S2CellId.FromToken(token).contains(leaf)]
            caption.append(f"{partition['name']}: {holding[0] if holding else 'no cell'}")
        expected.append((caption, []))
    return expected


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_shows_its_validation_samples_with_their_labels(task, data_dir, tmp_path):
    cfg = browse_config(task, data_dir, tmp_path, "split=val")
    samples = collect_samples(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert len(samples) == min(SHOWN, len(datamodule.val_set))
    assert [(s.caption, s.box_labels) for s in samples] == expected_labels(task, datamodule, SHOWN)

    size = cfg.input_size
    assert all(s.image.dtype == torch.uint8 and s.image.shape == (3, size, size) for s in samples)
    if task == "detection":  # the annotated boxes, resized with the image to the square input
        for sample, record in zip(samples, datamodule.val_set.records, strict=False):
            scale = torch.tensor([size / record.width, size / record.height] * 2)
            torch.testing.assert_close(sample.boxes, torch.from_numpy(record.boxes) * scale, atol=1e-3, rtol=0)

    path = browse(cfg)
    assert path == tmp_path / "val.png"
    layout = sheet_layout(samples, COLUMNS)
    assert (layout.columns, layout.rows) == (COLUMNS, 1 if task == "detection" else 2)
    with Image.open(path) as sheet:
        pixels = np.asarray(sheet.convert("RGB"))
    assert pixels.shape == (layout.rows * layout.tile_height, COLUMNS * layout.tile_width, 3)
    for index, sample in enumerate(samples):  # each tile holds its picture as the model receives it
        if sample.boxes is None:
            top = (index // COLUMNS) * layout.tile_height + MARGIN
            left = (index % COLUMNS) * layout.tile_width + MARGIN
            np.testing.assert_array_equal(pixels[top : top + size, left : left + size], sample.image.permute(1, 2, 0))


def test_float_normalised_images_are_shown_as_the_uint8_they_came_from():
    original = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    shown = display_pixels(normalize_images(original, mean, std), mean, std)
    assert shown.dtype == torch.uint8
    assert (shown.int() - original.int()).abs().max() <= 1
    assert display_pixels(original, mean, std) is original


def test_a_plain_datamodule_of_normalised_float_images_is_shown_by_the_base_adapter(data_dir, tmp_path, monkeypatch):
    """The plug-in example's SceneFolders (torchvision only: float images normalised with ImageNet's mean and std,
    no class names) on the built-in shapes: classes named by index, images de-normalised."""
    monkeypatch.syspath_prepend(str(PLUGIN_EXAMPLE))
    cfg = browse_config("classification", data_dir, tmp_path, "split=val")
    shapes = instantiate(cfg.data)
    shapes.prepare_data()
    cfg.data = OmegaConf.create(
        {"_target_": "scenes_plugin.data.SceneFolders", "root": str(shapes.data_dir), "image_size": 64, "batch_size": 4}
    )
    samples = collect_samples(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    listed = datamodule.val_set.samples[:SHOWN]
    assert [s.caption for s in samples] == [[f"class {label}"] for _, label in listed]
    resize = v2.Compose([v2.ToImage(), v2.Resize((64, 64))])
    for sample, (path, _) in zip(samples, listed, strict=True):
        assert sample.image.dtype == torch.float32
        with Image.open(path) as image:
            expected = resize(image.convert("RGB"))
        shown = display_pixels(sample.image, cfg.normalize.mean, cfg.normalize.std)
        assert (shown.int() - expected.int()).abs().max() <= 1


def test_long_captions_wrap_inside_their_tile():
    name = "n90000003-floppy_ears_plain_tail_solid_and_a_very_long_name"
    samples = [BrowseSample(torch.zeros(3, 32, 32, dtype=torch.uint8), [name, "short"])]
    layout = sheet_layout(samples, COLUMNS)
    assert layout.tile_width == MIN_TILE_WIDTH + 2 * MARGIN and layout.columns == 1
    lines = layout.caption_lines(samples[0])
    assert "".join(lines[:-1]) == name and lines[-1] == "short" and len(lines) >= 3
    assert all(layout.font.getlength(line) <= MIN_TILE_WIDTH for line in lines)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("split=test", "split must be one of train, val, got 'test'"),
        ("n=0", "n must be an integer >= 1, got 0"),
        ("n=many", "n must be an integer >= 1, got 'many'"),
        ("columns=0", "columns must be an integer >= 1, got 0"),
    ],
)
def test_bad_split_or_count_is_refused_naming_the_key_before_any_data(override, message, tmp_path):
    cfg = compose_config([f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path}", override], "browse")
    with pytest.raises(ConfigError, match=f"^{message}$"):
        browse(cfg)
    assert not (tmp_path / "data").exists()


def test_the_command_writes_the_training_grid_from_any_directory(data_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    args = [*QUICK, f"paths.data_dir={data_dir}", "n=5", "columns=3"]
    result = subprocess.run(
        [sys.executable, "-m", "mnet_tasks.browse", *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path == Path("outputs/classification/browse/train.png")
    with Image.open(tmp_path / path) as sheet:
        width, height = sheet.size
    assert width == 3 * (MIN_TILE_WIDTH + 2 * MARGIN)  # 3 columns of 64 px pictures in the narrowest tiles
    assert height % 2 == 0 and height // 2 > 64 + 3 * MARGIN  # 2 rows of a picture and its caption


def test_training_faces_are_named_by_their_identity_folder():
    """A training batch carries identities (-1: a face without one), a validation batch photo indices."""
    batch = {"image": torch.zeros(3, 3, 8, 8, dtype=torch.uint8), "identity": torch.tensor([1, -1, 0])}
    samples = FaceEmbeddingAdapter().browse_samples(batch, SimpleNamespace(class_names=["Ada", "Bo"]))
    assert [sample.caption for sample in samples] == [["Bo"], ["unlabeled"], ["Ada"]]
