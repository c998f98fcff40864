"""Face-attribute data in the CelebA layout: list-file parsers, the dataset and its DataModule.

::

    <root>/img_align_celeba/000001.jpg ...
    <root>/list_attr_celeba.txt        line 1: number of images; line 2: attribute names;
                                       then "<image> v1 ... vA" per image, each v -1 or 1
    <root>/list_eval_partition.txt     "<image> <split>" per image: 0 train, 1 val, 2 test

Any number of attributes works; their names come from the file. Training images without a line in the attribute
file, and the images of an optional extra folder (``data.unlabeled_dir``), are unlabeled: they join training only
with ``data.include_unlabeled=true``, for distillation from a teacher. Without ``data.root`` the built-in synthetic
faces are generated in the same layout (``mnet_tasks.tasks.attributes.synthetic``).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mnet_tasks.data.bad_files import BadFile, NotedSample, noted
from mnet_tasks.data.datamodule import ImageDataModule, LabelledImageDataset, is_image_file
from mnet_tasks.data.images import ImageReadError
from mnet_tasks.tasks.attributes.synthetic import ATTRIBUTE_FILE, FACES, IMAGE_DIR, PARTITION_FILE

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")  # list_eval_partition.txt's 0, 1, 2
EXPECTED_LAYOUT = f"<root>/{IMAGE_DIR}/*.jpg, <root>/{ATTRIBUTE_FILE} and <root>/{PARTITION_FILE}"


class CelebAFormatError(ValueError):
    """A malformed CelebA list file; the message names the file and the line."""


@dataclass(frozen=True)
class AttributeTable:
    """The contents of ``list_attr_celeba.txt``.

    Attributes:
        names: attribute names, in file order (the order of the model's outputs).
        images: image file names, in file order.
        labels: ``(len(images), len(names))`` float32, 1 for CelebA's 1 and 0 for its -1.
    """

    names: tuple[str, ...]
    images: tuple[str, ...]
    labels: np.ndarray


def _content_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of the non-blank lines."""
    with open(path, encoding="utf-8-sig") as file:
        return [(number, line) for number, line in enumerate(file, start=1) if line.strip()]


def _attribute_names(path: Path, line: str) -> list[str]:
    names = line.split()
    if not names:
        raise CelebAFormatError(f"{path}, line 2: expected the attribute names, found an empty line")
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise CelebAFormatError(f"{path}, line 2: attribute names repeat: {', '.join(repeated)}")
    return names


def read_attribute_names(path: str | Path) -> list[str]:
    """The attribute names (line 2), without reading the image lines: the head is sized before the data loads."""
    with open(path, encoding="utf-8-sig") as file:
        file.readline()
        return _attribute_names(Path(path), file.readline())


def read_attribute_file(path: str | Path) -> AttributeTable:
    """Parse ``list_attr_celeba.txt``; any malformed line is an error naming the file and line number."""
    path = Path(path)
    lines = _content_lines(path)
    if len(lines) < 2 or lines[0][0] != 1 or lines[1][0] != 2:
        raise CelebAFormatError(f"{path}: expected the image count on line 1 and the attribute names on line 2")
    count_text = lines[0][1].strip()
    if not count_text.isdigit():
        raise CelebAFormatError(f"{path}, line 1: expected the number of images, found {count_text!r}")
    names = _attribute_names(path, lines[1][1])
    images: list[str] = []
    labels: list[list[bool]] = []
    first_line_of: dict[str, int] = {}
    for number, line in lines[2:]:
        image, *values = line.split()
        if len(values) != len(names):
            raise CelebAFormatError(
                f"{path}, line {number}: expected an image name and {len(names)} attribute values (-1 or 1), "
                f"found {len(values)} values"
            )
        if image in first_line_of:
            raise CelebAFormatError(
                f"{path}, line {number}: {image} is listed again (first on line {first_line_of[image]})"
            )
        for name, value in zip(names, values, strict=True):
            if value not in ("1", "-1"):
                raise CelebAFormatError(
                    f"{path}, line {number}: attribute {name} of {image} is {value!r}; expected -1 or 1"
                )
        first_line_of[image] = number
        images.append(image)
        labels.append([value == "1" for value in values])
    if int(count_text) != len(images):
        raise CelebAFormatError(f"{path}, line 1: says {count_text} images but the file lists {len(images)}")
    return AttributeTable(tuple(names), tuple(images), np.array(labels, dtype=np.float32).reshape(-1, len(names)))


def read_partition_file(path: str | Path) -> dict[str, str]:
    """Parse ``list_eval_partition.txt`` into ``{image: "train" | "val" | "test"}``, in file order."""
    path = Path(path)
    splits: dict[str, str] = {}
    for number, line in _content_lines(path):
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise CelebAFormatError(
                f"{path}, line {number}: expected '<image> <split>' with split 0 (train), 1 (val) or 2 (test), "
                f"found {line.strip()!r}"
            )
        if parts[0] in splits:
            raise CelebAFormatError(f"{path}, line {number}: {parts[0]} is listed again")
        splits[parts[0]] = SPLITS[int(parts[1])]
    return splits


class CelebADataset(LabelledImageDataset):
    """Samples ``(image path, row of targets)``, the row -1 for an unlabeled image.

    Items are dicts: ``image`` (CHW float), ``target`` (A floats, 0/1; zeros when unlabeled), ``labeled`` (bool)
    and ``index`` (the sample's position, which keys a teacher's cached outputs).
    """

    def __init__(
        self, samples: Sequence[tuple[Path, int]], targets: np.ndarray, transform: Callable[..., dict]
    ) -> None:
        super().__init__(samples, transform)
        self.targets = torch.from_numpy(targets)

    def __getitem__(self, index: int) -> dict[str, Any] | BadFile | NotedSample:
        row = self.samples[index][1]
        labeled = row >= 0
        try:
            image = self.load_image(index)
        except ImageReadError as error:
            return BadFile.from_error(error)
        sample = {
            "image": self.transform(image=image)["image"],
            "target": self.targets[row] if labeled else torch.zeros(self.targets.shape[1]),
            "labeled": labeled,
            "index": index,
        }
        return noted(sample, self.samples[index][0], image)


@dataclass(frozen=True)
class SplitSamples:
    """One split: image paths, the labels of the labelled ones, and which sample has which label row; the
    problems met while listing it and the listed images found missing."""

    samples: list[tuple[Path, int]]
    targets: np.ndarray
    problems: dict[str, int] = field(default_factory=dict)
    missing_files: list[BadFile] = field(default_factory=list)
    unused_files: list[BadFile] = field(default_factory=list)

    def dataset(self, transform: Callable[..., dict]) -> CelebADataset:
        dataset = CelebADataset(self.samples, self.targets, transform)
        dataset.problems.update(self.problems)
        dataset.missing_files = list(self.missing_files)
        dataset.unused_files = list(self.unused_files)
        return dataset


class CelebADataModule(ImageDataModule):
    """Multi-label face attributes in the CelebA layout (or the built-in synthetic faces when ``root`` is null).

    Batches are dicts (see :class:`CelebADataset`). ``head_kwargs()`` gives the task the attribute names.

    Args:
        include_unlabeled: add the unlabeled training images (no attribute line, or in ``unlabeled_dir``) to the
            training set; they carry no labels, so only a distilling task (``task.teacher``) can use them.
        unlabeled_dir: an extra folder of unlabeled images, relative to the root (or absolute).
        train_scale: RandomResizedCrop's area range; milder than ImageNet's because a tight crop can cut a hat
            or a beard out of an aligned face and so change its labels.
        crop_pct: validation resizes the shorter side (the width) to ``image_size / crop_pct`` and centre-crops;
            1.0 keeps the full width of the aligned faces.
    """

    synthetic_data = FACES
    expected_layout = EXPECTED_LAYOUT

    def __init__(
        self,
        *,
        include_unlabeled: bool = False,
        unlabeled_dir: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**{"train_scale": (0.6, 1.0), "crop_pct": 1.0, **options})
        self.include_unlabeled = include_unlabeled
        self.unlabeled_dir = unlabeled_dir
        self.test_set: CelebADataset | None = None
        self._splits: dict[str, SplitSamples] | None = None
        self.labels_without_split = 0  # attribute lines of images that list_eval_partition.txt does not list

    def check_layout(self) -> None:
        hint = f"expected layout {EXPECTED_LAYOUT}; data.root must point at the folder holding them"
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root {self.root} does not exist ({hint})")
        for path in (self.root / IMAGE_DIR, self.root / ATTRIBUTE_FILE, self.root / PARTITION_FILE):
            if not path.exists():
                raise FileNotFoundError(f"missing {path} ({hint})")
        read_attribute_names(self.root / ATTRIBUTE_FILE)
        if self.unlabeled_dir is not None and not self._unlabeled_folder().is_dir():
            raise FileNotFoundError(f"data.unlabeled_dir: no folder {self._unlabeled_folder()}")

    @property
    def class_names(self) -> list[str]:
        """The attribute names, from the attribute file's header."""
        path = self.data_dir / ATTRIBUTE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; call prepare_data() first or check data.root")
        return read_attribute_names(path)

    def head_kwargs(self) -> dict[str, list[str]]:
        return {"attribute_names": self.class_names}

    def build_dataset(self, split: str, transform: Callable[..., dict]) -> CelebADataset:
        return self.split_samples()[split].dataset(transform)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if stage in (None, "test") and self.test_set is None:
            self.test_set = self.listed_dataset("test", self.eval_transform(self.image_size))

    def built_datasets(self) -> dict[str, CelebADataset]:
        built = super().built_datasets()
        return built if self.test_set is None else {**built, "test": self.test_set}

    def data_report(self) -> dict[str, dict[str, int]]:
        """Per split, and the attribute lines that no split uses."""
        report = super().data_report()
        if self.labels_without_split:
            report[ATTRIBUTE_FILE] = {
                f"labelled image without a line in {PARTITION_FILE}, not used": self.labels_without_split
            }
        return report

    def test_dataloader(self) -> DataLoader:
        """CelebA has a labelled test split (partition 2)."""
        return self.loader(self.test_set, "test", shuffle=False)

    def unaugmented_dataloader(self, split: str, image_size: int) -> DataLoader:
        """A split's images in index order through the validation transform at ``image_size``: the view a
        teacher's outputs are computed and cached on. Its ``dataset.samples`` name the images."""
        dataset = self.build_dataset(split, self.eval_transform(image_size))
        return self.loader(dataset, split, shuffle=False)

    def _unlabeled_folder(self) -> Path:
        return self.data_dir / self.unlabeled_dir  # an absolute unlabeled_dir replaces data_dir

    def split_samples(self) -> dict[str, SplitSamples]:
        """Parse the two list files once: every split's samples, checked against the image folder."""
        if self._splits is not None:
            return self._splits
        table = read_attribute_file(self.data_dir / ATTRIBUTE_FILE)
        partition = read_partition_file(self.data_dir / PARTITION_FILE)
        row_of = {image: row for row, image in enumerate(table.images)}
        image_dir = self.data_dir / IMAGE_DIR
        present = set(os.listdir(image_dir))  # one listing: a stat per listed image would be slow on network disks

        rows: dict[str, list[int]] = {split: [] for split in SPLITS}
        paths: dict[str, list[Path]] = {split: [] for split in SPLITS}
        problems: dict[str, Counter[str]] = {split: Counter() for split in SPLITS}
        missing: dict[str, list[BadFile]] = {split: [] for split in SPLITS}
        unlabeled: list[Path] = []
        unlabeled_eval = 0
        for image, split in partition.items():
            if image not in present:
                problems[split][f"image listed in {PARTITION_FILE} but missing, dropped"] += 1
                missing[split].append(BadFile(str(image_dir / image), f"missing file, listed in {PARTITION_FILE}"))
            elif image in row_of:
                rows[split].append(row_of[image])
                paths[split].append(image_dir / image)
            elif split == "train":
                unlabeled.append(image_dir / image)
            else:
                unlabeled_eval += 1
                problems[split][f"image without a line in {ATTRIBUTE_FILE}, not evaluated"] += 1
        if any(missing.values()):
            log.warning(
                "%d images listed in %s are not in %s, e.g. %s: skipped",
                sum(map(len, missing.values())),
                self.data_dir / PARTITION_FILE,
                image_dir,
                ", ".join(bad.path for bad in [*missing["train"], *missing["val"], *missing["test"]][:5]),
            )
        unlisted = [
            BadFile(str(image_dir / name), f"not in {PARTITION_FILE}, not used")
            for name in sorted(present - set(partition))
        ]
        if unlisted:
            problems["train"][f"file in {IMAGE_DIR} not in {PARTITION_FILE}, not used"] = len(unlisted)
        if self.unlabeled_dir is not None:
            folder = self._unlabeled_folder()
            unlabeled += [folder / name for name in sorted(os.listdir(folder)) if is_image_file(name)]
        without_split = sum(image not in partition for image in table.images)
        self.labels_without_split = without_split
        if without_split:
            log.warning("%d labelled images have no line in %s: not used", without_split, PARTITION_FILE)
        if unlabeled_eval:
            log.warning(
                "%d val/test images have no attribute line in %s: not evaluated", unlabeled_eval, ATTRIBUTE_FILE
            )
        for split in ("train", "val"):
            if not rows[split]:
                raise ValueError(f"{self.data_dir}: no labelled {split} images (check {PARTITION_FILE})")

        splits = {}
        for split in SPLITS:
            samples = [(path, i) for i, path in enumerate(paths[split])]
            if split == "train" and self.include_unlabeled:
                samples += [(path, -1) for path in unlabeled]
            elif split == "train" and unlabeled:
                problems[split]["unlabeled image, not used: data.include_unlabeled=false"] = len(unlabeled)
            unused = unlisted if split == "train" else []
            splits[split] = SplitSamples(
                samples, table.labels[rows[split]], dict(problems[split]), missing[split], unused
            )
        used = "used" if self.include_unlabeled else "not used: data.include_unlabeled=false"
        log.info(
            "%s: %d attributes; %d train (+%d unlabeled, %s), %d val, %d test images",
            self.dataset_name,
            len(table.names),
            len(rows["train"]),
            len(unlabeled),
            used,
            len(rows["val"]),
            len(rows["test"]),
        )
        self._splits = splits
        return splits
