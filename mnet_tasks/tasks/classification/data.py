"""ImageNet-style classification data: ``<root>/{train,val}/<class>/<image>``.

The same loader serves a real dataset (``data.root``) and the built-in synthetic shapes, which are
generated on first use under ``data.cache_dir`` when no root is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torchvision.datasets.folder import find_classes, make_dataset

from mnet_tasks.data.bad_files import BadFile
from mnet_tasks.data.datamodule import IMAGE_EXTENSIONS, ImageDataModule, LabelledImageDataset, is_image_file
from mnet_tasks.tasks.classification.synthetic import SHAPES

EXPECTED_LAYOUT = "<root>/train/<class>/*.JPEG and <root>/val/<class>/*.JPEG"


def list_classes(split_dir: Path) -> list[str]:
    """Class names are the sorted subfolder names (torchvision's ``find_classes``), so label ids are stable across
    runs and machines; none is an empty list here, where torchvision raises."""
    try:
        return find_classes(str(split_dir))[0]
    except FileNotFoundError:
        return []


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


class ImageFolderDataset(LabelledImageDataset):
    """The images of one split folder holding one subfolder per class, listed by torchvision's ``make_dataset``
    (subfolders of a class included). Every other file there is reported, not silently passed over: counted in
    ``problems`` and named in ``unused_files`` (so in ``skipped_files.csv``)."""

    def __init__(self, root_split_dir: str | Path, transform: Callable[..., dict]) -> None:
        self.root = Path(root_split_dir)
        self.classes = list_classes(self.root)
        other_files: list[str] = []

        def is_image(path: str) -> bool:
            usable = is_image_file(path)
            if not usable:
                other_files.append(path)
            return usable

        class_to_idx = {name: label for label, name in enumerate(self.classes)}
        listed = make_dataset(str(self.root), class_to_idx, is_valid_file=is_image, allow_empty=True)
        if not listed:
            raise ValueError(f"no images found in {self.root} (expected layout {EXPECTED_LAYOUT})")
        super().__init__([(Path(path), label) for path, label in listed], transform)
        reason = f"extension not supported (the reader takes {', '.join(sorted(IMAGE_EXTENSIONS))}), not used"
        self.unused_files = [BadFile(path, reason) for path in other_files]
        if other_files:
            self.problems[reason] = len(other_files)


class ImageFolderDataModule(ImageDataModule):
    """Classification data in the ImageFolder layout.

    ``root=None`` trains on synthetic shapes generated with the ``synthetic`` parameters (an empty dict for the
    defaults); with ``synthetic=None`` as well there is no built-in fallback and ``root`` is required.
    """

    synthetic_data = SHAPES
    expected_layout = EXPECTED_LAYOUT

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
