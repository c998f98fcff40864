"""The fast training path: uint8 loaders, normalisation on the device, one-pass colour jitter, reduced JPEG
decoding, channels_last and torch.compile from the trainer's keys."""

from __future__ import annotations

import math
import os

import albumentations as A
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torchvision.transforms.v2.functional as TF
from conftest import tiny_data
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from PIL import Image

from mnet_tasks.callbacks import TrainingSpeed
from mnet_tasks.config import compose_config
from mnet_tasks.data.images import read_rgb
from mnet_tasks.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LUMA,
    ColorTwist,
    normalize_images,
    train_decode_side,
)
from mnet_tasks.run import build_trainer
from mnet_tasks.task_module import build_task
from mnet_tasks.training_bench import write_photos

RNG = np.random.default_rng(0)


def photo(height: int = 60, width: int = 80) -> np.ndarray:
    """Mid-range colours, so that no adjustment below clips."""
    return RNG.integers(60, 190, (height, width, 3), dtype=np.uint8)


# --- normalisation on the device ---


def test_normalize_images_equals_albumentations_normalize_to_two_ulp():
    images = RNG.integers(0, 256, (4, 40, 50, 3), dtype=np.uint8)
    expected = np.stack([A.Normalize()(image=image)["image"] for image in images])  # the loaders' old float path
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    normalized = normalize_images(batch, IMAGENET_MEAN, IMAGENET_STD, torch.channels_last)
    assert normalized.dtype == torch.float32 and normalized.is_contiguous(memory_format=torch.channels_last)
    result = normalized.permute(0, 2, 3, 1).numpy()
    assert np.all(np.abs(result - expected) <= 2 * np.spacing(np.abs(expected).astype(np.float32)))
    assert normalize_images(batch, IMAGENET_MEAN, IMAGENET_STD).is_contiguous()  # NCHW when asked
    single = normalize_images(batch[0], IMAGENET_MEAN, IMAGENET_STD, torch.channels_last)  # one image: 3-d
    torch.testing.assert_close(single, normalized[0].contiguous())


# --- one-pass colour jitter ---


def twist(steps, image: np.ndarray) -> np.ndarray:
    return ColorTwist(p=1.0).apply(image, steps=steps)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)


def as_array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.permute(1, 2, 0).numpy().astype(int)


def test_color_twist_matches_torchvision_for_brightness_contrast_and_saturation():
    image = photo()
    reference = as_tensor(image)
    for name, adjust in (
        ("brightness", TF.adjust_brightness),
        ("contrast", TF.adjust_contrast),
        ("saturation", TF.adjust_saturation),
    ):
        for factor in (0.8, 1.2):
            ours = twist([(name, factor)], image).astype(int)
            assert np.abs(ours - as_array(adjust(reference, factor))).max() <= 1, (name, factor)
    # composed in order: contrast blends towards the mean grey of the image as brightness left it
    steps = [("brightness", 1.15), ("contrast", 0.85), ("saturation", 1.1)]
    expected = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(reference, 1.15), 0.85), 1.1)
    assert np.abs(twist(steps, image).astype(int) - as_array(expected)).max() <= 3  # torchvision rounds each step


def test_color_twist_hue_keeps_greys_and_follows_torchvision_for_small_turns():
    image = photo()
    grey = np.repeat(image[:, :, :1], 3, axis=2)
    assert np.abs(twist([("hue", 0.02)], grey).astype(int) - grey).max() <= 1  # greys have no hue
    for turn in (0.02, -0.05):  # a rotation in YIQ, not HSV: the colours move the way torchvision moves them
        ours = (twist([("hue", turn)], image).astype(int) - image).ravel()
        torchvision = (as_array(TF.adjust_hue(as_tensor(image), turn)) - image).ravel()
        assert ours @ torchvision / np.linalg.norm(ours) / np.linalg.norm(torchvision) > 0.5
        assert 0.5 < np.abs(ours).mean() / np.abs(torchvision).mean() < 2
    # the luma of every pixel is kept by saturation and hue
    for step in (("saturation", 0.5), ("hue", 0.05)):
        assert np.abs(twist([step], image) @ LUMA - image @ LUMA).max() <= 1.5


def test_color_twist_draws_every_factor_in_range_and_order():
    transform = ColorTwist(brightness=0.2, contrast=0.3, saturation=0.4, hue=0.05)
    transform.set_random_seed(0)
    seen = [transform.get_params()["steps"] for _ in range(200)]
    assert {tuple(name for name, _ in steps) for steps in seen} > {("brightness", "contrast", "saturation", "hue")}
    limits = {"brightness": (0.8, 1.2), "contrast": (0.7, 1.3), "saturation": (0.6, 1.4), "hue": (-0.05, 0.05)}
    for steps in seen:
        assert sorted(name for name, _ in steps) == sorted(limits)
        assert all(limits[name][0] <= factor <= limits[name][1] for name, factor in steps)
    with pytest.raises(ValueError, match="hue must be in"):
        ColorTwist(hue=0.6)


# --- reduced JPEG decoding ---


def test_read_rgb_decodes_a_large_jpeg_at_the_smallest_scale_keeping_min_side(tmp_path):
    path = tmp_path / "photo.jpg"
    write_photos(tmp_path, 2)[1].rename(path)  # 500x375, photo-like content
    assert read_rgb(path).shape == (375, 500, 3)
    assert read_rgb(path, min_side=150).shape == (188, 250, 3)  # 1/2: 188 >= 150 > 375 / 4
    assert read_rgb(path, min_side=90).shape == (94, 125, 3)  # 1/4
    assert read_rgb(path, min_side=200).shape == (375, 500, 3)  # 188 would be too small
    png = tmp_path / "photo.png"
    Image.open(path).save(png)
    assert read_rgb(png, min_side=90).shape == (375, 500, 3)  # only JPEGs have DCT scales
    # the reduced image is the full one, smaller: close to it resized by area
    full = torch.from_numpy(read_rgb(path)).permute(2, 0, 1).float()[None]
    reduced = torch.from_numpy(read_rgb(path, min_side=150)).permute(2, 0, 1).float()[None]
    area = torch.nn.functional.interpolate(full, size=reduced.shape[-2:], mode="area")
    assert (reduced - area).abs().mean() < 6  # grain is where they differ


def test_train_decode_side_keeps_the_mean_crop_at_full_resolution():
    assert train_decode_side(128, (0.25, 1.0)) == math.ceil(128 / math.sqrt(0.625)) == 162
    assert train_decode_side(224, (1.0, 1.0)) == 224


def test_training_datasets_decode_reduced_and_validation_at_full_size(tmp_path, data_dir):
    synthetic = ["num_classes=2", "train_per_class=2", "val_per_class=2"]
    cfg = compose_config(
        [f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path}", "backbone.resolution=64"]
        + [f"data.synthetic.{value}" for value in synthetic]
    )
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.train_set.decode_side == train_decode_side(64, (0.25, 1.0))
    assert datamodule.val_set.decode_side is None  # the pixels an exported model's preprocessing gives


# --- decoded images kept in memory, loader workers in the background ---


def tiny_classification(data_dir, tmp_path, *overrides: str):
    """The tiny built-in classification data (generated under ``data_dir``), set up for training."""
    cfg = compose_config(
        [f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path}", "backbone.resolution=64", *overrides]
        + [f"data.synthetic.{value}" for value in ("num_classes=2", "train_per_class=6", "val_per_class=2")]
    )
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_kept_images_give_the_same_items_without_their_files_and_stay_unchanged(tmp_path):
    kept = tiny_classification(tmp_path / "data", tmp_path)  # the config's cache_mb keeps both splits
    read = tiny_classification(tmp_path / "data", tmp_path, "data.cache_mb=0")
    assert read.train_set.decoded is None and read.val_set.decoded is None
    for split, images in (("train_set", 12), ("val_set", 4)):
        dataset, reference = getattr(kept, split), getattr(read, split)
        assert len(dataset.decoded) == len(dataset) == images
        for index in range(len(dataset)):
            np.testing.assert_array_equal(dataset.decoded[index], reference.decode_image(index))
    untouched = [image.copy() for image in kept.train_set.decoded + kept.val_set.decoded]
    for path, _ in kept.train_set.samples + kept.val_set.samples:
        path.unlink()  # from now on only memory can serve them
    for split in ("train_set", "val_set"):
        dataset, reference = getattr(kept, split), getattr(read, split)
        for epoch in range(2):
            dataset.transform.set_random_seed(epoch)
            items = [dataset[index] for index in range(len(dataset))]
            reference.transform.set_random_seed(epoch)
            expected = [reference.transform(image=image)["image"] for image in dataset.decoded]
            for (image, label), want, (_, reference_label) in zip(items, expected, reference.samples, strict=True):
                torch.testing.assert_close(image, want, rtol=0, atol=0)
                assert label == reference_label
    kept_now = kept.train_set.decoded + kept.val_set.decoded
    assert all(np.array_equal(a, b) for a, b in zip(untouched, kept_now, strict=True))  # no transform wrote into them


def test_images_beyond_cache_mb_are_read_from_files_after_a_short_probe(tmp_path, caplog, monkeypatch):
    from mnet_tasks.data import datamodule as datamodule_module

    datamodule = tiny_classification(tmp_path / "data", tmp_path, "data.cache_mb=0")
    dataset = datamodule.train_set
    decoded = []
    decode = dataset.decode_image
    monkeypatch.setattr(dataset, "decode_image", lambda index: decoded.append(index) or decode(index))
    monkeypatch.setattr(datamodule_module, "PROBE_IMAGES", 3)
    one_image_mb = decode(0).nbytes / 2**20
    with caplog.at_level("INFO"):
        assert not dataset.keep_decoded(one_image_mb * 5, "train")  # 12 images foretold from the first 3
    assert dataset.decoded is None and decoded == [0, 1, 2]
    assert "more than data.cache_mb=" in caplog.text
    decoded.clear()
    assert dataset.keep_decoded(one_image_mb * 12, "train") and len(decoded) == 12


def test_a_kept_unreadable_image_is_skipped_with_its_reason_every_time(tmp_path):
    datamodule = tiny_classification(tmp_path / "data", tmp_path, "data.cache_mb=0")
    dataset = datamodule.train_set
    dataset.samples[1][0].write_bytes(b"not a jpeg")
    assert dataset.keep_decoded(64, "train")
    for _ in range(2):
        skipped = dataset[1]
        assert skipped.path == str(dataset.samples[1][0]) and "not an image format" in skipped.reason
    assert dataset[0][0].dtype == torch.uint8


def test_cache_mb_is_checked_and_geolocation_photos_are_kept_too(tmp_path):
    with pytest.raises(InstantiationException, match=r"data\.cache_mb must be a number"):
        tiny_classification(tmp_path / "data", tmp_path, "data.cache_mb=-1")
    cfg = compose_config(
        [*tiny_data("geolocalization"), f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path}"]
    )
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert len(datamodule.train_set.decoded) == len(datamodule.train_set) > 0


class SchedulingPolicy(torch.utils.data.Dataset):
    """Each item: the scheduling policy of the worker process that loads it."""

    transform = None

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return os.sched_getscheduler(0)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux's SCHED_IDLE")
def test_loader_workers_run_in_the_background_of_a_cpu_step(tmp_path):
    from mnet_tasks.data.datamodule import split_loader

    datamodule = tiny_classification(tmp_path / "data", tmp_path, "data.cache_mb=0", "data.num_workers=1")
    assert datamodule.trainer is None  # a bare loop: the step runs on the CPU
    policies = next(iter(split_loader(datamodule, SchedulingPolicy(), "train", shuffle=False)))
    assert policies.tolist() == [os.SCHED_IDLE] * 2
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this process, the step's, is left as it was


# --- the trainer's speed keys ---


class BatchSpy(pl.Callback):
    def __init__(self) -> None:
        self.images: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.images.append(batch[0])


@pytest.mark.parametrize("channels_last", [True, False])
def test_trainer_channels_last_sets_the_network_and_its_batches(tmp_path, quick, channels_last):
    cfg = compose_config([*quick, f"paths.output_dir={tmp_path}", f"trainer.channels_last={channels_last}"])
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    module = build_task(cfg, **datamodule.head_kwargs())
    spy = BatchSpy()
    trainer = build_trainer(cfg.trainer, [spy], fast_dev_run=1, logger=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=datamodule)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    weight = module.backbone.stem.conv.weight
    assert weight.is_contiguous(memory_format=layout)
    (images,) = spy.images
    assert images.dtype == torch.float32 and images.is_contiguous(memory_format=layout)
    assert -3 < images.min() < images.max() < 3  # normalised on the way in


def test_channels_last_training_step_equals_nchw(quick, tmp_path, data_dir):
    cfg = compose_config([*quick, f"paths.output_dir={tmp_path}"])
    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    labels = torch.randint(0, 4, (8,))
    losses, grads = [], []
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        module = build_task(cfg, num_classes=4).to(memory_format=layout)
        module.memory_format = layout
        batch = module.on_after_batch_transfer((images, labels), 0)
        loss = module.criterion(module(batch[0]), labels)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in module.parameters()]))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-5)
    # the backward kernels of the two layouts sum in other orders: measured up to 3% apart in norm, same direction
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99


def test_trainer_speed_keys_are_checked():
    with pytest.raises(ValueError, match=r"trainer\.channels_last must be true or false"):
        TrainingSpeed(channels_last="yes")
    with pytest.raises(ValueError, match=r"trainer\.compile must be true, false or a mapping"):
        TrainingSpeed(compile="max-autotune")


def test_trainer_compile_compiles_each_network_in_place(quick, tmp_path):
    cfg = compose_config([*quick, f"paths.output_dir={tmp_path}"])
    module = build_task(cfg, num_classes=4)
    state_keys = set(module.state_dict())
    TrainingSpeed(channels_last=False, compile={"backend": "eager"}).setup(None, module, "fit")
    assert module.backbone._compiled_call_impl is not None  # nn.Module.compile: the module compiled in place
    assert set(module.state_dict()) == state_keys  # checkpoints keep their keys
    assert module(torch.randn(2, 3, 64, 64)).shape == (2, 4)
