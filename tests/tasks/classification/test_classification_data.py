"""Tests for image reading, synthetic data generation, transforms and the ImageFolder data module."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnet_tasks.data.images import ImageReadError, read_rgb
from mnet_tasks.data.synthetic import MARKER_NAME
from mnet_tasks.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from mnet_tasks.tasks.classification import synthetic as shapes
from mnet_tasks.tasks.classification.data import ImageFolderDataModule, ImageFolderDataset
from mnet_tasks.tasks.classification.synthetic import SHAPES

SMALL = {"num_classes": 4, "train_per_class": 6, "val_per_class": 3, "image_size": 48}


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def file_mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return SHAPES.generate(tmp_path_factory.mktemp("cache") / shapes.SHAPES.folder_name(**SMALL), **SMALL)


# --- synthetic shapes ---------------------------------------------------------------------------


def test_generation_is_deterministic_per_seed(tmp_path: Path, shapes_root: Path) -> None:
    again = file_bytes(SHAPES.generate(tmp_path / "again", **SMALL))
    other_seed = file_bytes(SHAPES.generate(tmp_path / "other", **SMALL, seed=1))

    assert again == file_bytes(shapes_root)
    assert again.keys() == other_seed.keys()
    images = [name for name in again if name.endswith(".jpg")]
    assert all(again[name] != other_seed[name] for name in images)


def test_generation_layout_and_counts(shapes_root: Path) -> None:
    classes = sorted(shapes.SHAPE_NAMES[:4])
    for split, count in (("train", 6), ("val", 3)):
        assert sorted(p.name for p in (shapes_root / split).iterdir()) == classes
        for name in classes:
            files = sorted(p.name for p in (shapes_root / split / name).iterdir())
            assert files == [f"{name}_{i:05d}.jpg" for i in range(count)]
    with Image.open(shapes_root / "val" / classes[0] / f"{classes[0]}_00002.jpg") as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (48, 48))
    marker = json.loads((shapes_root / MARKER_NAME).read_text())
    assert {key: marker[key] for key in SMALL} == SMALL
    assert marker["seed"] == 0
    assert [p.name for p in shapes_root.parent.iterdir()] == [shapes_root.name]  # no temp folder left


def test_generation_reuses_a_complete_dataset(shapes_root: Path) -> None:
    before = file_mtimes(shapes_root)
    assert SHAPES.generate(shapes_root, **SMALL) == shapes_root
    assert file_mtimes(shapes_root) == before


def test_generation_refuses_a_dataset_made_with_other_parameters(shapes_root: Path) -> None:
    with pytest.raises(ValueError, match="other parameters") as error:
        SHAPES.generate(shapes_root, **{**SMALL, "seed": 7})
    message = str(error.value)
    assert str(shapes_root) in message
    assert "'seed': 0" in message and "'seed': 7" in message
    assert "data.cache_dir" in message


def test_generation_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="no complete synthetic dataset"):
        SHAPES.generate(tmp_path / "data", **SMALL)
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine"


def test_too_many_classes_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=f"num_classes must be 2 to {len(shapes.SHAPE_NAMES)}, got {len(shapes.SHAPE_NAMES) + 1}"
    ):
        SHAPES.generate(tmp_path / "data", num_classes=len(shapes.SHAPE_NAMES) + 1)
    assert not (tmp_path / "data").exists()


def test_interrupted_generation_leaves_no_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_render = shapes.render_shape_image
    calls = []

    def render_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    monkeypatch.setattr(shapes, "render_shape_image", render_then_fail)
    with pytest.raises(KeyboardInterrupt):
        SHAPES.generate(tmp_path / "data", **SMALL)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(shapes, "render_shape_image", real_render)
    root = SHAPES.generate(tmp_path / "data", **SMALL)
    assert (root / MARKER_NAME).is_file()


def test_a_run_that_finished_first_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_render = shapes.render_shape_image

    def other_run_finishes_first(*args, **kwargs):
        monkeypatch.setattr(shapes, "render_shape_image", real_render)
        SHAPES.generate(tmp_path / "data", **SMALL)
        return real_render(*args, **kwargs)

    monkeypatch.setattr(shapes, "render_shape_image", other_run_finishes_first)
    root = SHAPES.generate(tmp_path / "data", **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
    assert (root / MARKER_NAME).is_file()


# --- read_rgb -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected_rgb"),
    [
        (Image.new("L", (7, 5), 100), (100, 100, 100)),
        (Image.new("RGBA", (7, 5), (10, 20, 30, 128)), (10, 20, 30)),
        (Image.new("RGB", (7, 5), (200, 40, 0)).convert("P", palette=Image.Palette.ADAPTIVE), (200, 40, 0)),
        (Image.fromarray(np.full((5, 7), 40000, dtype=np.uint16)), (155, 155, 155)),  # 40000 // 257
    ],
    ids=["grayscale", "rgba", "palette", "16-bit"],
)
def test_read_rgb_converts_png_modes(tmp_path: Path, image: Image.Image, expected_rgb: tuple) -> None:
    path = tmp_path / "image.png"
    image.save(path)
    array = read_rgb(path)
    assert array.shape == (5, 7, 3) and array.dtype == np.uint8
    assert (array == np.array(expected_rgb, dtype=np.uint8)).all()


def test_read_rgb_applies_exif_orientation(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the left half ends up on top
    path = tmp_path / "photo.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)

    array = read_rgb(path).astype(int)
    assert array.shape == (40, 20, 3)
    top, bottom = array[:15].mean(axis=(0, 1)), array[25:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 50
    assert bottom[2] > 200 and bottom[0] < 50


def write_truncated_jpeg(path: Path) -> None:
    full = path.with_name("full.jpg")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full)
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])


@pytest.mark.parametrize(
    "make",
    [lambda path: None, lambda path: path.write_bytes(b""), write_truncated_jpeg],
    ids=["missing", "empty", "truncated"],
)
def test_read_rgb_errors_name_the_file(tmp_path: Path, make) -> None:
    path = tmp_path / "broken.jpg"
    make(path)
    with pytest.raises(ImageReadError, match="cannot read image") as error:
        read_rgb(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, ValueError)


# --- transforms ---------------------------------------------------------------------------------


def test_transforms_give_uint8_chw_tensors() -> None:
    image = np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    for transform in (train_transform(32), eval_transform(32)):
        tensor = transform(image=image)["image"]
        assert isinstance(tensor, torch.Tensor)
        assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.uint8


def test_eval_transform_is_deterministic_and_normalises_when_given_mean_and_std() -> None:
    image = np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    transform = eval_transform(32)
    assert torch.equal(transform(image=image)["image"], transform(image=image)["image"])

    flat = np.full((40, 60, 3), (255, 0, 128), dtype=np.uint8)
    assert eval_transform(32)(image=flat)["image"][:, 0, 0].tolist() == [255, 0, 128]
    tensor = eval_transform(32, mean=IMAGENET_MEAN, std=IMAGENET_STD)(image=flat)["image"]
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    expected = (torch.tensor([255.0, 0.0, 128.0]) / 255 - mean) / std
    assert torch.allclose(tensor.mean(dim=(1, 2)), expected, atol=1e-4)


# --- data module on synthetic data --------------------------------------------------------------


def test_datamodule_on_synthetic_data(shapes_root: Path) -> None:
    data = ImageFolderDataModule(
        cache_dir=str(shapes_root.parent), image_size=32, batch_size=4, num_workers=0, synthetic=SMALL
    )
    data.prepare_data()
    # The task module sizes its head before setup() runs.
    assert data.num_classes == 4
    assert data.class_names == sorted(shapes.SHAPE_NAMES[:4])
    assert data.head_kwargs() == {"num_classes": 4}
    assert data.dataset_name == "synthetic_shapes"

    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8  # the task module normalises
    assert labels.dtype == torch.long and labels.min() >= 0 and labels.max() < 4
    assert len(data.train_dataloader().dataset) == 4 * 6
    assert sum(len(batch[1]) for batch in data.val_dataloader()) == 4 * 3
    assert sum(len(batch[1]) for batch in data.test_dataloader()) == 4 * 3


def test_datamodule_keeps_workers_alive_between_epochs(shapes_root: Path) -> None:
    data = ImageFolderDataModule(cache_dir=str(shapes_root.parent), num_workers=1, synthetic=SMALL)
    data.setup("fit")
    loader = data.train_dataloader()
    assert loader.persistent_workers and not loader.drop_last and not loader.pin_memory


@pytest.mark.parametrize("image_size", [16, 31, 64.0, True])
def test_datamodule_rejects_bad_image_size(image_size) -> None:
    with pytest.raises(ValueError, match=r"data\.image_size"):
        ImageFolderDataModule(image_size=image_size)


# --- data module on a user folder ---------------------------------------------------------------


def make_imagefolder(root: Path, classes: dict[str, list[str]]) -> Path:
    """``classes`` maps ``split/class`` to file names; each file is a small solid-colour image."""
    for folder, names in classes.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (40, 30), (90, 160, 30)).save(root / folder / name)
    return root


def test_datamodule_on_a_user_folder(tmp_path: Path) -> None:
    root = make_imagefolder(
        tmp_path / "tiny_imagenet",
        {
            "train/n01": ["a.JPEG", "b.png"],
            "train/n02": ["c.jpeg"],
            "val/n01": ["d.JPEG"],
            "val/n02": ["e.JPEG"],
        },
    )
    (root / "train" / "n02" / "labels.txt").write_text("not an image")
    data = ImageFolderDataModule(root=str(root), image_size=32, batch_size=8, num_workers=0)
    data.prepare_data()
    assert (data.num_classes, data.class_names, data.dataset_name) == (2, ["n01", "n02"], "tiny_imagenet")
    assert ImageFolderDataModule(root=str(root), name="custom").dataset_name == "custom"

    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (3, 3, 32, 32)
    assert sorted(labels.tolist()) == [0, 0, 1]


def test_dataset_lists_images_sorted_with_labels(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path, {"b_class": ["2.png", "1.JPG"], "a_class": ["z.webp"]})
    (root / "a_class" / "readme.md").write_text("skip me")
    dataset = ImageFolderDataset(root, eval_transform(32))
    assert dataset.classes == ["a_class", "b_class"]
    assert [(path.name, label) for path, label in dataset.samples] == [
        ("z.webp", 0),
        ("1.JPG", 1),
        ("2.png", 1),
    ]


def test_datamodule_names_the_missing_val_folder(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "data", {"train/cat": ["a.jpg"]})
    data = ImageFolderDataModule(root=str(root))
    with pytest.raises(FileNotFoundError) as error:
        data.prepare_data()
    message = str(error.value)
    assert str(root / "val") in message
    assert "data.root" in message and "<root>/val/<class>/*.JPEG" in message


def test_datamodule_names_mismatched_classes(tmp_path: Path) -> None:
    root = make_imagefolder(
        tmp_path / "data",
        {"train/cat": ["a.jpg"], "train/dog": ["b.jpg"], "val/cat": ["c.jpg"], "val/fox": ["d.jpg"]},
    )
    with pytest.raises(ValueError, match="differ") as error:
        ImageFolderDataModule(root=str(root)).prepare_data()
    message = str(error.value)
    assert "dog" in message and "fox" in message and "data.root" in message


def test_datamodule_names_class_folders_without_images(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "data", {"train/cat": ["a.jpg"], "val/cat": []})
    with pytest.raises(ValueError, match="without images") as error:
        ImageFolderDataModule(root=str(root)).prepare_data()
    assert str(root / "val") in str(error.value)
