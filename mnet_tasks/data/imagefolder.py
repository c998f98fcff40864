"""ImageNet-style classification data: ``<root>/{train,val}/<class>/<image>``.

The same loader serves a real dataset (``data.root``) and the built-in synthetic shapes, which are
generated on first use under ``data.cache_dir`` when no root is given.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset

from mnet_tasks.data.bad_files import BadFile, SkippedFiles, SkippingDataLoader
from mnet_tasks.data.images import ImageReadError, read_rgb
from mnet_tasks.data.resumable import loader_generator, resumable_loader
from mnet_tasks.data.synthetic import DATASET_NAME, generate_shapes, shapes_folder_name
from mnet_tasks.data.transforms import eval_transform, train_transform

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
EXPECTED_LAYOUT = "<root>/train/<class>/*.JPEG and <root>/val/<class>/*.JPEG"
MIN_IMAGE_SIZE = 32


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_classes(split_dir: Path) -> list[str]:
    """Class names are the sorted subfolder names, so label ids are stable across runs and machines."""
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())


def _has_image(class_dir: Path) -> bool:
    """Stops at the first image so that checking ImageNet does not list every file."""
    with os.scandir(class_dir) as entries:
        return any(entry.is_file() and is_image_file(entry.name) for entry in entries)


def check_layout(root: Path) -> None:
    """Fail early, naming the folder and the config key, instead of deep inside a DataLoader worker."""
    hint = f"expected layout {EXPECTED_LAYOUT}; data.root must point at the folder holding train/ and val/"
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist ({hint})")
    classes = {}
    for split in ("train", "val"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"missing folder {split_dir} ({hint})")
        classes[split] = list_classes(split_dir)
        if not classes[split]:
            raise ValueError(f"{split_dir} has no class folders ({hint})")
        empty = [name for name in classes[split] if not _has_image(split_dir / name)]
        if empty:
            shown = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
            raise ValueError(f"class folders without images in {split_dir}: {shown} ({hint})")
    if classes["train"] != classes["val"]:
        only_train = sorted(set(classes["train"]) - set(classes["val"]))
        only_val = sorted(set(classes["val"]) - set(classes["train"]))
        raise ValueError(
            f"train and val class folders under {root} differ: only in train: {only_train or 'none'}; "
            f"only in val: {only_val or 'none'} (check data.root)"
        )


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
    (:class:`~mnet_tasks.data.bad_files.SkippingDataLoader`) into ``datamodule.skipped_files``."""
    options.update(
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
    ``missing_files`` names the listed files found missing then.
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Callable[..., dict]) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.problems: Counter[str] = Counter()
        self.missing_files: list[BadFile] = []

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> np.ndarray:
        """The decoded ``HxWx3`` image of sample ``index``; a subclass may crop it before the transform."""
        return read_rgb(self.samples[index][0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | BadFile:
        try:
            image = self.load_image(index)
        except ImageReadError as error:
            return BadFile.from_error(error)
        return self.transform(image=image)["image"], self.samples[index][1]


class ImageFolderDataset(LabelledImageDataset):
    """The images of one split folder holding one subfolder per class."""

    def __init__(self, root_split_dir: str | Path, transform: Callable[..., dict]) -> None:
        self.root = Path(root_split_dir)
        self.classes = list_classes(self.root)
        samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            files = sorted(f for f in os.listdir(self.root / name) if is_image_file(f))
            samples.extend((self.root / name / f, label) for f in files)
        if not samples:
            raise ValueError(f"no images found in {self.root} (expected layout {EXPECTED_LAYOUT})")
        super().__init__(samples, transform)


class ClassificationDataModule(pl.LightningDataModule):
    """What every single-label image DataModule shares: a real dataset under ``root`` or, without one, a synthetic
    dataset generated in the same file format; transforms, loaders and the class count the head needs.

    A subclass names its format (``synthetic_dataset_name``, ``expected_layout``) and implements the four
    hooks below: where the synthetic set lives and how it is written, the layout check of a real root, the class
    names, and one split's dataset. ``root=None`` with ``synthetic=None`` is an error: there is no built-in data.
    Unreadable images are skipped and recorded in ``skipped_files`` (:mod:`mnet_tasks.data.bad_files`), up to
    ``max_skipped_files`` distinct files.
    """

    synthetic_dataset_name = "synthetic"
    expected_layout = ""

    def __init__(
        self,
        root: str | None,
        cache_dir: str,
        image_size: int,
        batch_size: int,
        num_workers: int,
        train_scale: Sequence[float],
        crop_pct: float,
        synthetic: Mapping[str, Any] | None,
        name: str | None,
        max_skipped_files: int | None = 100,
    ) -> None:
        super().__init__()
        self.skipped_files = SkippedFiles(max_skipped_files)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"data.image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
        self.root = Path(root).expanduser() if root is not None else None
        self.synthetic = dict(synthetic) if synthetic is not None else None
        if self.root is not None:
            self.data_dir = self.root
        elif self.synthetic is not None:
            self.data_dir = Path(cache_dir).expanduser() / self.synthetic_folder_name(self.synthetic)
        else:
            raise ValueError(f"data.root is required: point it at a dataset laid out as {self.expected_layout}")
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_scale = tuple(float(s) for s in train_scale)
        self.crop_pct = crop_pct
        self.name = name
        self.train_set: LabelledImageDataset | None = None
        self.val_set: LabelledImageDataset | None = None

    # --- the format's hooks ---

    def synthetic_folder_name(self, params: dict[str, Any]) -> str:
        """The cache subfolder of the synthetic dataset with these parameters (a digest of them)."""
        raise NotImplementedError

    def generate_synthetic(self) -> None:
        """Write the synthetic dataset with ``self.synthetic`` parameters to ``self.data_dir`` unless it is there."""
        raise NotImplementedError

    def check_layout(self) -> None:
        """Fail early, naming the file or folder and ``data.root``, if ``self.root`` lacks the expected layout."""
        raise NotImplementedError

    @property
    def class_names(self) -> list[str]:
        """Available right after ``prepare_data()``, before ``setup()``: the task sizes its head from it."""
        raise NotImplementedError

    def build_dataset(self, split: str, transform: Callable[..., dict]) -> LabelledImageDataset:
        """The ``train`` or ``val`` dataset."""
        raise NotImplementedError

    # --- shared ---

    @property
    def dataset_name(self) -> str:
        if self.name:
            return self.name
        return self.synthetic_dataset_name if self.root is None else self.root.resolve().name

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def head_kwargs(self) -> dict[str, int]:
        """Arguments the task module needs to size the classification head."""
        return {"num_classes": self.num_classes}

    def prepare_data(self) -> None:
        """Generate the synthetic data, or check that a given root has the expected layout."""
        if self.root is None:
            self.generate_synthetic()
        else:
            self.check_layout()

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            augment = train_transform(self.image_size, scale=self.train_scale)
            augment.set_random_seed(int(torch.randint(2**31, ())))  # reproducible under seed_everything
            self.train_set = self.listed_dataset("train", augment)
        if self.val_set is None:
            self.val_set = self.listed_dataset("val", eval_transform(self.image_size, crop_pct=self.crop_pct))

    def listed_dataset(self, split: str, transform: Callable[..., dict]) -> LabelledImageDataset:
        """``build_dataset``, with the files it found missing recorded as skipped."""
        dataset = self.build_dataset(split, transform)
        self.skipped_files.add(split, dataset.missing_files, loading=False)
        return dataset

    def built_datasets(self) -> dict[str, LabelledImageDataset]:
        return {split: data for split, data in (("train", self.train_set), ("val", self.val_set)) if data is not None}

    def data_report(self) -> dict[str, dict[str, int]]:
        """Per split: the samples kept and each problem found while listing them (``data_report.json``)."""
        return {split: {"samples": len(data), **data.problems} for split, data in self.built_datasets().items()}

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.train_set, "train"), "train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.val_set, "val"), "val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Testing uses the validation split (ImageNet has no labelled test split; for datasets that have one,
        such as Stanford Dogs, the validation split is that test split)."""
        return self.val_dataloader()

    @staticmethod
    def _require(dataset: LabelledImageDataset | None, split: str) -> LabelledImageDataset:
        if dataset is None:
            raise RuntimeError(f"the {split} dataset is not built; call setup() first")
        return dataset

    def _loader(self, dataset: LabelledImageDataset, split: str, shuffle: bool) -> DataLoader:
        return split_loader(self, dataset, split, shuffle)


class ImageFolderDataModule(ClassificationDataModule):
    """Classification data in the ImageFolder layout.

    ``root=None`` trains on synthetic shapes generated with the ``synthetic`` parameters (an empty dict for the
    defaults); with ``synthetic=None`` as well there is no built-in fallback and ``root`` is required.
    """

    synthetic_dataset_name = DATASET_NAME
    expected_layout = EXPECTED_LAYOUT

    def __init__(
        self,
        root: str | None = None,
        cache_dir: str = "datasets",
        image_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 2,
        train_scale: Sequence[float] = (0.25, 1.0),
        crop_pct: float = 0.875,
        synthetic: dict | None = None,
        name: str | None = None,
        max_skipped_files: int | None = 100,
    ) -> None:
        super().__init__(
            root,
            cache_dir,
            image_size,
            batch_size,
            num_workers,
            train_scale,
            crop_pct,
            synthetic,
            name,
            max_skipped_files,
        )

    def synthetic_folder_name(self, params: dict[str, Any]) -> str:
        return shapes_folder_name(**params)

    def generate_synthetic(self) -> None:
        generate_shapes(self.data_dir, **self.synthetic)

    def check_layout(self) -> None:
        check_layout(self.root)

    @property
    def class_names(self) -> list[str]:
        train_dir = self.data_dir / "train"
        if not train_dir.is_dir():
            raise FileNotFoundError(
                f"{train_dir} does not exist; call prepare_data() first or check data.root "
                f"(expected layout {EXPECTED_LAYOUT})"
            )
        return list_classes(train_dir)

    def build_dataset(self, split: str, transform: Callable[..., dict]) -> ImageFolderDataset:
        return ImageFolderDataset(self.data_dir / split, transform)
