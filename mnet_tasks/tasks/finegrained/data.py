"""Fine-grained classification data: one image folder per class plus one list of images per split.

Stanford Dogs (the defaults)::

    <root>/Images/<wnid>-<breed>/<image>.jpg
    <root>/train_list.mat, <root>/test_list.mat     file_list (paths under Images/) and 1-based labels
    <root>/Annotation/<wnid>-<breed>/<image>        PASCAL VOC boxes, read only with crop_to_box

Other fine-grained sets (CUB-200-2011, Stanford Cars, ...) use the same code with text lists: one image path
relative to the images folder per line. Classes are the sorted class folder names, whatever the list format.
Without ``root`` the built-in synthetic breeds are generated in exactly the Stanford Dogs files.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

from mnet_tasks.data.bad_files import BadFile
from mnet_tasks.data.datamodule import ImageDataModule, LabelledImageDataset
from mnet_tasks.data.images import read_rgb
from mnet_tasks.tasks.classification.data import list_classes
from mnet_tasks.tasks.finegrained.synthetic import BREED_IMAGES

log = logging.getLogger(__name__)

EXPECTED_LAYOUT = (
    "<root>/Images/<class>/*.jpg with split lists <root>/train_list.mat and <root>/test_list.mat "
    "(Stanford Dogs), or text lists holding one image path relative to Images/ per line"
)
SHOWN = 5  # entries quoted in a report

Box = tuple[int, int, int, int]  # left, top, right, bottom in 0-based pixels, right and bottom exclusive


@dataclass(frozen=True)
class ListEntry:
    """One image of a split list: where it sits in the list (1-based), its path under the images folder, and the
    0-based label the list gives (``.mat`` lists) or None (text lists: the folder is the class)."""

    number: int
    path: str
    label: int | None = None


def _mat_strings(cells: np.ndarray) -> list[str]:
    """The strings of a MATLAB cell array as scipy reads it: each cell is a 1-element array of str."""
    return [str(np.asarray(cell).ravel()[0]) for cell in np.asarray(cells, dtype=object).ravel()]


def read_mat_list(path: Path) -> list[ListEntry]:
    """A Stanford Dogs list: ``file_list`` (N cells of ``<wnid>-<breed>/<image>.jpg``) and ``labels`` (N, 1-based)."""
    try:
        contents = scipy.io.loadmat(path)
    except (OSError, ValueError, NotImplementedError, MatReadError) as error:
        raise ValueError(f"split list {path} is not a readable .mat file: {error}") from error
    if "file_list" not in contents:
        found = sorted(k for k in contents if not k.startswith("__"))
        raise ValueError(
            f"split list {path} has no 'file_list' (Stanford Dogs lists hold file_list and labels): {found}"
        )
    files = _mat_strings(contents["file_list"])
    if "labels" not in contents:
        return [ListEntry(number, file) for number, file in enumerate(files, start=1)]
    labels = np.asarray(contents["labels"]).ravel()
    if len(labels) != len(files):
        raise ValueError(f"split list {path} has {len(files)} files but {len(labels)} labels")
    rule = "labels must be whole numbers from 1 (Stanford Dogs' lists are 1-based)"
    if labels.dtype.kind not in "uif":  # unsigned, signed or float
        raise ValueError(f"split list {path}: {rule}, got {labels.dtype} values")
    entries = list(enumerate(zip(files, labels, strict=True), start=1))
    wrong = [
        (ListEntry(number, file), f"label {label:g}")
        for number, (file, label) in entries
        if not (label >= 1 and label == np.round(label))  # NaN fails both
    ]
    if wrong:
        raise ValueError(f"split list {path}: {rule}: {_quote(wrong, path.name)}")
    return [ListEntry(number, file, int(label) - 1) for number, (file, label) in entries]


def read_text_list(path: Path) -> list[ListEntry]:
    """One image path (relative to the images folder) per line; blank lines and ``#`` comments are skipped. The
    whole line is the path, so class folders with spaces (Stanford Cars' model names) work."""
    entries = []
    with open(path, encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                entries.append(ListEntry(number, text.replace("\\", "/")))
    return entries


def read_split_list(path: Path) -> list[ListEntry]:
    """Entries of a ``.mat`` (Stanford Dogs) or text split list."""
    return read_mat_list(path) if path.suffix.lower() == ".mat" else read_text_list(path)


def read_voc_box(path: Path) -> Box:
    """The box around every object of a PASCAL VOC annotation (a photo of two dogs keeps both), 0-based pixels."""
    objects = ET.parse(path).getroot().findall("object/bndbox")
    if not objects:
        raise ValueError("no object/bndbox")
    corners = np.array([[float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")] for b in objects])
    # VOC counts pixels from 1 and includes xmax/ymax.
    return (
        int(corners[:, 0].min()) - 1,
        int(corners[:, 1].min()) - 1,
        int(corners[:, 2].max()),
        int(corners[:, 3].max()),
    )


def _quote(problems: list[tuple[ListEntry, str]], list_name: str) -> str:
    shown = [f"{list_name} entry {entry.number} '{entry.path}' ({reason})" for entry, reason in problems[:SHOWN]]
    more = f" and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return "; ".join(shown) + more


class SplitListDataset(LabelledImageDataset):
    """The images a split list names, optionally cropped to their annotated boxes.

    Entries whose image is missing (or not inside a class folder) are skipped, counted in ``skipped`` and
    reported in one warning with their positions in the list, so a broken download shows up at setup, not hours
    into training. A ``.mat`` label that disagrees with the entry's class folder is an error.
    """

    def __init__(
        self,
        images_dir: Path,
        list_path: Path,
        classes: Sequence[str],
        transform: Callable[..., dict],
        annotations_dir: Path | None = None,
    ) -> None:
        self.list_path = list_path
        label_of = {name: index for index, name in enumerate(classes)}
        samples, kept, self.skipped, mislabelled = [], [], [], []
        for entry in read_split_list(list_path):
            folder = entry.path.split("/", 1)[0]
            if folder not in label_of or "/" not in entry.path:
                self.skipped.append((entry, f"not in a class folder of {images_dir}"))
            elif not (images_dir / entry.path).is_file():
                self.skipped.append((entry, "missing file"))
            elif entry.label is not None and entry.label != label_of[folder]:
                given = classes[entry.label] if entry.label < len(classes) else f"label {entry.label + 1}"
                mislabelled.append((entry, f"labelled {given}"))
            else:
                samples.append((images_dir / entry.path, label_of[folder]))
                kept.append(entry)
        if mislabelled:
            raise ValueError(
                f"split list {list_path} labels disagree with the class folders of {images_dir} (label n is the n-th "
                f"folder in sorted order): {_quote(mislabelled, list_path.name)}"
            )
        if self.skipped:
            log.warning(
                "%s: %d of %d entries skipped: %s",
                list_path,
                len(self.skipped),
                len(self.skipped) + len(samples),
                _quote(self.skipped, list_path.name),
            )
        if not samples:
            raise ValueError(f"split list {list_path} names no image found under {images_dir} (check data.root)")
        super().__init__(samples, transform)
        for entry, reason in self.skipped:
            self.problems[f"{reason}, dropped"] += 1
            if reason == "missing file":
                missing = BadFile(
                    str(images_dir / entry.path), f"missing file, listed in {list_path.name} entry {entry.number}"
                )
                self.missing_files.append(missing)
        self.boxes = self._read_boxes(kept, annotations_dir) if annotations_dir is not None else None

    def _read_boxes(self, entries: list[ListEntry], annotations_dir: Path) -> list[Box | None]:
        """One box per sample (None: no usable annotation, the whole image is used; counted and reported)."""
        boxes: list[Box | None] = []
        unusable: list[tuple[ListEntry, str]] = []
        for entry in entries:
            stem = annotations_dir / entry.path.rsplit(".", 1)[0]
            path = next((p for p in (stem, stem.with_name(stem.name + ".xml")) if p.is_file()), None)
            if path is None:
                boxes.append(None)
                unusable.append((entry, f"no annotation {stem}"))
                continue
            try:
                boxes.append(read_voc_box(path))
            except (ET.ParseError, ValueError, TypeError) as error:  # TypeError: a bndbox without a corner
                boxes.append(None)
                unusable.append((entry, f"unreadable annotation {path}: {error}"))
        if unusable:
            self.problems["box annotation unusable, whole image kept"] = len(unusable)
            log.warning(
                "%s: %d of %d images keep their whole frame, their box is unusable: %s",
                self.list_path,
                len(unusable),
                len(entries),
                _quote(unusable, self.list_path.name),
            )
        return boxes

    def decode_image(self, index: int) -> np.ndarray:
        box = self.boxes[index] if self.boxes is not None else None
        if box is None:
            return super().decode_image(index)
        image = read_rgb(self.samples[index][0])  # at full size, not decode_side's: the box is in the file's pixels
        height, width = image.shape[:2]
        left, top = max(0, box[0]), max(0, box[1])
        right, bottom = min(width, box[2]), min(height, box[3])
        if right - left < 2 or bottom - top < 2:  # a box outside the image: keep the whole image
            return image
        return image[top:bottom, left:right]


class SplitListDataModule(ImageDataModule):
    """Fine-grained data in the Stanford Dogs layout (or any class folders with split lists).

    Args:
        root: the dataset folder; None trains on the synthetic breeds (``synthetic`` parameters).
        images_dir: the folder of class folders, relative to ``root``.
        train_list / val_list: split lists relative to ``root``: ``.mat`` (Stanford Dogs) or text. Stanford Dogs
            has no validation split; its test list is validated on, as the paper reports.
        crop_to_box: crop every image (train and val) to the box around its annotated objects, read from
            ``annotations_dir/<image path without extension>`` (PASCAL VOC XML, with or without ``.xml``).
        Others as in :class:`~mnet_tasks.tasks.classification.data.ImageFolderDataModule`.
    """

    synthetic_data = BREED_IMAGES
    expected_layout = EXPECTED_LAYOUT

    def __init__(
        self,
        *,
        images_dir: str = "Images",
        train_list: str = "train_list.mat",
        val_list: str = "test_list.mat",
        crop_to_box: bool = False,
        annotations_dir: str = "Annotation",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.images_dir = images_dir
        self.split_lists = {"train": train_list, "val": val_list}
        self.crop_to_box = crop_to_box
        self.annotations_dir = annotations_dir

    def check_layout(self) -> None:
        hint = f"expected layout {EXPECTED_LAYOUT}; data.root must point at the folder holding them"
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root {self.root} does not exist ({hint})")
        images = self.root / self.images_dir
        if not images.is_dir():
            raise FileNotFoundError(f"missing images folder {images} (data.images_dir={self.images_dir}; {hint})")
        if not list_classes(images):
            raise ValueError(f"{images} has no class folders ({hint})")
        for split, key in (("train", "data.train_list"), ("val", "data.val_list")):
            path = self.root / self.split_lists[split]
            if not path.is_file():
                raise FileNotFoundError(f"missing split list {path} ({key}={self.split_lists[split]}; {hint})")
        if self.crop_to_box and not (self.root / self.annotations_dir).is_dir():
            raise FileNotFoundError(
                f"data.crop_to_box=true needs the annotations folder {self.root / self.annotations_dir} "
                f"(data.annotations_dir={self.annotations_dir})"
            )

    @property
    def class_names(self) -> list[str]:
        images = self.data_dir / self.images_dir
        if not images.is_dir():
            raise FileNotFoundError(
                f"{images} does not exist; call prepare_data() first or check data.root (expected layout "
                f"{EXPECTED_LAYOUT})"
            )
        return list_classes(images)

    def build_dataset(self, split: str, transform: Callable[..., dict]) -> SplitListDataset:
        dataset = SplitListDataset(
            self.data_dir / self.images_dir,
            self.data_dir / self.split_lists[split],
            self.class_names,
            transform,
            annotations_dir=self.data_dir / self.annotations_dir if self.crop_to_box else None,
        )
        if split == "train":  # reported once, with the training split
            dataset.unused_files = self.unlisted_files()
            if dataset.unused_files:
                dataset.problems["file in no split list, not used"] = len(dataset.unused_files)
        return dataset

    def unlisted_files(self) -> list[BadFile]:
        """The files under the images folder that neither split list names: not used, and named for the report."""
        images = self.data_dir / self.images_dir
        lists = [self.split_lists[split] for split in ("train", "val")]
        listed = {entry.path for name in lists for entry in read_split_list(self.data_dir / name)}
        found = {path.relative_to(images).as_posix() for path in images.rglob("*") if path.is_file()}
        reason = f"in neither {' nor '.join(lists)}, not used"
        return [BadFile(str(images / path), reason) for path in sorted(found - listed)]
