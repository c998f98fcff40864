"""The base of the image DataModules: a real dataset under ``data.root`` or, without one, the task's synthetic
dataset generated in the same file format; transforms, loaders, the bad-file policy and the data report."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset

from mnet_tasks.data.bad_files import BadFile, NotedSample, SkippedFiles, SkippingDataLoader, noted
from mnet_tasks.data.images import ImageReadError, read_rgb
from mnet_tasks.data.resumable import loader_generator, resumable_loader
from mnet_tasks.data.synthetic import SyntheticData
from mnet_tasks.data.transforms import eval_transform, train_decode_side, train_transform

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
MIN_IMAGE_SIZE = 32


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def seed_worker(worker_id: int) -> None:
    """Seed a loader worker: Lightning's seeding, plus the albumentations pipeline, whose own RNG
    ``seed_everything`` does not reach. The worker's torch seed is distinct per worker and reproducible."""
    pl_worker_init_function(worker_id)
    transform = torch.utils.data.get_worker_info().dataset.transform
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(torch.initial_seed() % 2**32)


def split_loader(
    datamodule: pl.LightningDataModule, dataset: Dataset, split: str, shuffle: bool, **options: Any
) -> DataLoader:
    """A split's DataLoader as every DataModule here builds it: shuffled (training) loaders resume mid-epoch from a
    checkpoint (:mod:`mnet_tasks.data.resumable`); every loader skips unreadable images
    (:class:`~mnet_tasks.data.bad_files.SkippingDataLoader`) into ``datamodule.skipped_files``. Batches go to a GPU
    from pinned memory (the copy then overlaps the step)."""
    trainer = datamodule.trainer
    options.update(
        pin_memory=trainer is not None and trainer.strategy.root_device.type == "cuda",
        skipped=datamodule.skipped_files,
        split=split,
        batch_size=datamodule.batch_size,
        num_workers=datamodule.num_workers,
        persistent_workers=datamodule.num_workers > 0,
        worker_init_fn=seed_worker,
    )
    if shuffle:
        return resumable_loader(dataset, trainer=datamodule.trainer, **options)
    return SkippingDataLoader(dataset, shuffle=False, generator=loader_generator(), **options)


class LabelledImageDataset(Dataset):
    """``(image tensor, class index)`` pairs from a list of ``(image path, class index)`` samples; a
    :class:`~mnet_tasks.data.bad_files.BadFile` for an image that cannot be read.

    ``problems`` counts what was dropped or changed while the samples were listed (``data_report.json``), and
    ``missing_files`` names the listed files found missing then, ``unused_files`` the files found beside the
    data and left out (of another type, not in the lists), each with its reason. ``decode_side``: JPEGs are decoded
    at a reduced scale keeping at least this shorter side (:func:`~mnet_tasks.data.images.read_rgb`); the
    DataModule sets it on training sets.
    """

    decode_side: int | None = None

    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Callable[..., dict]) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.problems: Counter[str] = Counter()
        self.missing_files: list[BadFile] = []
        self.unused_files: list[BadFile] = []

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> np.ndarray:
        """The decoded ``HxWx3`` image of sample ``index``; a subclass may crop it before the transform."""
        return read_rgb(self.samples[index][0], self.decode_side)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | BadFile | NotedSample:
        try:
            image = self.load_image(index)
        except ImageReadError as error:
            return BadFile.from_error(error)
        return noted((self.transform(image=image)["image"], self.samples[index][1]), self.samples[index][0], image)


class FileDataModule(pl.LightningDataModule):
    """The base of the built-in DataModules: a real dataset under ``root``, or, without one, the task's synthetic
    dataset (:attr:`synthetic_data`, with the ``synthetic`` parameters) written in the same file format into a
    folder of its own under ``cache_dir``, so that one reader serves both. ``root=None`` with ``synthetic=None`` is
    an error: there is no built-in data. Unreadable images are skipped and recorded in ``skipped_files``
    (:mod:`mnet_tasks.data.bad_files`), up to ``max_skipped_files`` distinct files; :meth:`data_report` gives what
    listing the splits dropped.

    A subclass names its format (``synthetic_data``, ``expected_layout``), checks a real root
    (:meth:`check_layout`), and builds ``train_set`` and ``val_set`` in ``setup``.
    """

    synthetic_data: ClassVar[SyntheticData]
    expected_layout: ClassVar[str] = ""
    collate_fn: ClassVar[Callable[[list], Any] | None] = None  # None: torch's default_collate

    def __init__(
        self,
        root: str | None = None,
        cache_dir: str = "datasets",
        batch_size: int = 64,
        num_workers: int = 2,
        synthetic: Mapping[str, Any] | None = None,
        name: str | None = None,
        max_skipped_files: int | None = 100,
    ) -> None:
        super().__init__()
        self.skipped_files = SkippedFiles(max_skipped_files)
        self.root = Path(root).expanduser() if root is not None else None
        self.synthetic = dict(synthetic) if synthetic is not None else None
        if self.root is not None:
            self.data_dir = self.root
        elif self.synthetic is not None:
            self.data_dir = Path(cache_dir).expanduser() / self.synthetic_data.folder_name(**self.synthetic)
        else:
            raise ValueError(f"data.root is required: point it at a dataset laid out as {self.expected_layout}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.name = name
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def check_layout(self) -> None:
        """Fail early, naming the file or folder and ``data.root``, if ``self.root`` lacks the expected layout."""
        raise NotImplementedError

    @property
    def dataset_name(self) -> str:
        if self.name:
            return self.name
        return self.synthetic_data.name if self.root is None else self.root.resolve().name

    def prepare_data(self) -> None:
        """Generate the synthetic data, or check that a given root has the expected layout."""
        if self.root is None:
            self.synthetic_data.generate(self.data_dir, **self.synthetic)
        else:
            self.check_layout()

    def built_datasets(self) -> dict[str, Dataset]:
        return {split: data for split, data in (("train", self.train_set), ("val", self.val_set)) if data is not None}

    def data_report(self) -> dict[str, dict[str, int]]:
        """Per split: the samples kept and each problem found while listing them (``data_report.json``)."""
        return {split: {"samples": len(data), **data.problems} for split, data in self.built_datasets().items()}

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.train_set, "train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.val_set, "val", shuffle=False)

    def loader(self, dataset: Dataset | None, split: str, shuffle: bool) -> DataLoader:
        """A split's loader (:func:`split_loader`) with the format's ``collate_fn``."""
        if dataset is None:
            raise RuntimeError(f"the {split} dataset is not built; call setup() first")
        return split_loader(self, dataset, split, shuffle, collate_fn=self.collate_fn)


class ImageDataModule(FileDataModule):
    """Image-level labels (classes, attributes, locations): the shared transforms (random-resized-crop training over
    ``train_scale`` of the area, validation resizing to ``image_size / crop_pct`` and centre-cropping; uint8 images,
    which the task module normalises on the device) and the class count the head needs. A subclass gives the
    class names and one split's dataset. ``options``: the arguments of :class:`FileDataModule`, as every subclass
    takes them too."""

    def __init__(
        self,
        *,
        image_size: int = 224,
        train_scale: Sequence[float] = (0.25, 1.0),
        crop_pct: float = 0.875,
        **options: Any,
    ) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"data.image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
        super().__init__(**options)
        self.image_size = image_size
        self.train_scale = tuple(float(s) for s in train_scale)
        self.crop_pct = crop_pct

    @property
    def class_names(self) -> list[str]:
        """Available right after ``prepare_data()``, before ``setup()``: the task sizes its head from it."""
        raise NotImplementedError

    def build_dataset(self, split: str, transform: Callable[..., dict]) -> LabelledImageDataset:
        """The ``train`` or ``val`` dataset."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def head_kwargs(self) -> dict[str, int]:
        """Arguments the task module needs to size the classification head."""
        return {"num_classes": self.num_classes}

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            augment = train_transform(self.image_size, scale=self.train_scale)
            augment.set_random_seed(int(torch.randint(2**31, ())))  # reproducible under seed_everything
            self.train_set = self.listed_dataset("train", augment)
            self.train_set.decode_side = train_decode_side(self.image_size, self.train_scale)
        if self.val_set is None:
            self.val_set = self.listed_dataset("val", self.eval_transform(self.image_size))

    def eval_transform(self, image_size: int) -> Callable[..., dict]:
        """The validation view at ``image_size``: resized and centre-cropped by ``crop_pct``, uint8 (decoded at full
        size: the pixels are those an exported model's preprocessing gives)."""
        return eval_transform(image_size, crop_pct=self.crop_pct)

    def listed_dataset(self, split: str, transform: Callable[..., dict]) -> LabelledImageDataset:
        """``build_dataset``, with the files it found missing recorded as skipped."""
        dataset = self.build_dataset(split, transform)
        self.skipped_files.add(split, dataset.missing_files, loading=False)
        self.skipped_files.add_notes(split, dataset.unused_files)
        return dataset

    def test_dataloader(self) -> DataLoader:
        """Testing uses the validation split (ImageNet has no labelled test split; for datasets that have one,
        such as Stanford Dogs, the validation split is that test split)."""
        return self.val_dataloader()
