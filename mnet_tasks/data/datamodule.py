"""The base of the image DataModules: a real dataset under ``data.root`` or, without one, the task's synthetic
dataset generated in the same file format; transforms, loaders, the bad-file policy and the data report."""

from __future__ import annotations

import functools
import logging
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
from tqdm import tqdm

from mnet_tasks.data.bad_files import BadFile, NotedSample, SkippedFiles, SkippingDataLoader, noted
from mnet_tasks.data.images import ImageReadError, read_rgb
from mnet_tasks.data.resumable import loader_generator, resumable_loader
from mnet_tasks.data.synthetic import SyntheticData
from mnet_tasks.data.transforms import eval_transform, train_decode_side, train_transform

log = logging.getLogger(__name__)
PROBE_IMAGES = 16  # decoded images whose mean size foretells whether a split fits data.cache_mb
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
MIN_IMAGE_SIZE = 32


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def init_worker(worker_id: int, background: bool = False) -> None:
    """Seed a loader worker: Lightning's seeding, plus the albumentations pipeline, whose own RNG
    ``seed_everything`` does not reach. The worker's torch seed is distinct per worker and reproducible.

    ``background``: the worker yields the CPU to the training step (Linux's ``SCHED_IDLE``), for a step that runs on
    the same cores. Otherwise the workers preempt the step's intra-op threads, and each parallel region then waits
    for its slowest thread: on 2 cores, measured interleaved with the bare step (0.25 MobileNet-128, batch 64, 2
    workers), the loader-fed loop ran at 0.86x the prepared-batch step with workers at normal priority and 0.91x in
    the background, the loader's work now mostly filling the step's idle moments.
    """
    pl_worker_init_function(worker_id)
    transform = torch.utils.data.get_worker_info().dataset.transform
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(torch.initial_seed() % 2**32)
    if background and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def split_loader(
    datamodule: pl.LightningDataModule, dataset: Dataset, split: str, shuffle: bool, **options: Any
) -> DataLoader:
    """A split's DataLoader as every DataModule here builds it: shuffled (training) loaders resume mid-epoch from a
    checkpoint (:mod:`mnet_tasks.data.resumable`); every loader skips unreadable images
    (:class:`~mnet_tasks.data.bad_files.SkippingDataLoader`) into ``datamodule.skipped_files``. Batches go to a GPU
    from pinned memory (the copy then overlaps the step); when the step runs on the CPU, the workers run in the
    background of it (:func:`init_worker`)."""
    trainer = datamodule.trainer
    device = trainer.strategy.root_device.type if trainer is not None else "cpu"
    options.update(
        pin_memory=device == "cuda",
        skipped=datamodule.skipped_files,
        split=split,
        batch_size=datamodule.batch_size,
        num_workers=datamodule.num_workers,
        persistent_workers=datamodule.num_workers > 0,
        worker_init_fn=functools.partial(init_worker, background=device == "cpu"),
    )
    if shuffle:
        return resumable_loader(dataset, trainer=datamodule.trainer, **options)
    return SkippingDataLoader(dataset, shuffle=False, generator=loader_generator(), **options)


class DecodedImages(Dataset):
    """A dataset whose items start from one decoded image each (:meth:`decode_image`, which a dataset defines), read
    through :meth:`load_image`: from the file, or from memory once :meth:`keep_decoded` has kept them all."""

    decoded: list[np.ndarray | ImageReadError] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def decode_image(self, index: int) -> np.ndarray:
        """The decoded ``HxWx3`` image of item ``index``."""
        raise NotImplementedError

    def load_image(self, index: int) -> np.ndarray:
        """:meth:`decode_image`, or its result kept in memory; an unreadable file raises its error each time."""
        if self.decoded is None:
            return self.decode_image(index)
        image = self.decoded[index]
        if isinstance(image, ImageReadError):
            raise ImageReadError(image.path, image.reason)
        return image

    def keep_decoded(self, budget_mb: float, split: str) -> bool:
        """Decode every image once, now, and keep it in memory when all take at most ``budget_mb`` MB; False (and
        nothing kept) when they would take more, as soon as the images decoded so far foretell it.

        A small dataset trained for many epochs is otherwise decoded again every epoch, by workers that on a CPU
        run share the cores with the training step: decoding was half of a worker's time per image on the built-in
        data. Workers started by ``fork`` (Linux's default) share the kept images with this process.
        """
        budget, used, decoded = budget_mb * 2**20, 0, []
        for index in tqdm(range(len(self)), desc=f"decoding {split} images into memory", unit="img", leave=False):
            try:
                image = np.ascontiguousarray(self.decode_image(index))  # a crop's own pixels, not its whole file's
            except ImageReadError as error:
                image = ImageReadError(error.path, error.reason)  # without the traceback and the frames it holds
            else:
                used += image.nbytes
            decoded.append(image)
            if used > budget or (index + 1 >= PROBE_IMAGES and used / (index + 1) * len(self) > budget):
                log.info("%s images: more than data.cache_mb=%s MB decoded; read from their files", split, budget_mb)
                return False
        self.decoded = decoded
        log.info("%s images: %d kept decoded in memory (%.0f MB)", split, len(decoded), used / 2**20)
        return True


class LabelledImageDataset(DecodedImages):
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

    def decode_image(self, index: int) -> np.ndarray:
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
    class names and one split's dataset. ``cache_mb``: each split whose decoded images fit in this many MB is
    decoded once, in ``setup``, and kept in memory (:meth:`DecodedImages.keep_decoded`; 0: never).
    ``options``: the arguments of :class:`FileDataModule`, as every subclass takes them too."""

    def __init__(
        self,
        *,
        image_size: int = 224,
        train_scale: Sequence[float] = (0.25, 1.0),
        crop_pct: float = 0.875,
        cache_mb: float = 0,
        **options: Any,
    ) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"data.image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
        if isinstance(cache_mb, bool) or not isinstance(cache_mb, int | float) or not cache_mb >= 0:
            raise ValueError(f"data.cache_mb must be a number of MB >= 0 (0: no cache), got {cache_mb!r}")
        super().__init__(**options)
        self.image_size = image_size
        self.train_scale = tuple(float(s) for s in train_scale)
        self.crop_pct = crop_pct
        self.cache_mb = cache_mb

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
            self.keep_decoded(self.train_set, "train")
        if self.val_set is None:
            self.val_set = self.listed_dataset("val", self.eval_transform(self.image_size))
            self.keep_decoded(self.val_set, "val")

    def keep_decoded(self, dataset: Dataset, split: str) -> None:
        """Keep the split decoded in memory when ``cache_mb`` allows and its dataset is a
        :class:`DecodedImages`."""
        if self.cache_mb > 0 and isinstance(dataset, DecodedImages):
            dataset.keep_decoded(self.cache_mb, split)

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
