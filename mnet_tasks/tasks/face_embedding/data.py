"""Face identities to train on and LFW-style pairs to verify (or the built-in synthetic identities).

Layout under ``data.root`` (datasets/README.md), the real datasets' own::

    train/<identity>/<any name>.jpg      CASIA-WebFace / VGGFace2: one folder per training identity
    unlabeled/...                        optional: faces without identity, learned from a teacher only
    lfw/<name>/<name>_0001.jpg           LFW
    pairs.txt                            LFW's 10 folds of matched and mismatched pairs
    pairs_large.txt                      optional: a large pair list (no folds), for TAR at FAR 1e-4

Training items are dicts with ``image`` and ``identity`` (-1 for an unlabeled face). Validation runs over every
photo the pair lists name, once each: items have ``image``, ``index`` (the photo's position in
:meth:`FaceDataModule.verification_pairs`, which the pairs refer to) and ``identity`` (its person, for the int8
check's nearest-neighbour score). A photo a list names but the folder lacks is counted and its pairs are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mnet_tasks.data.bad_files import BadFile, NotedSample, noted
from mnet_tasks.data.datamodule import ImageDataModule, LabelledImageDataset, is_image_file, split_loader
from mnet_tasks.data.images import ImageReadError
from mnet_tasks.tasks.face_embedding.pairs import NO_FOLD, Pair, photo_path, read_pairs
from mnet_tasks.tasks.face_embedding.synthetic import (
    EVAL_DIR,
    IDENTITIES,
    LARGE_PAIRS_FILE,
    PAIRS_FILE,
    TRAIN_DIR,
    UNLABELED_DIR,
)

log = logging.getLogger(__name__)
MISSING = "listed in a pair list but missing, its pairs left out"


class FaceDataset(LabelledImageDataset):
    """Samples ``(image path, label)``; items are dicts with the ``image`` and the label under ``label_key``
    (``identity`` in training, ``index`` in validation, where ``identities`` gives each photo's person)."""

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        transform: Callable[..., dict],
        identities: Sequence[int] | None = None,
    ) -> None:
        super().__init__(samples, transform)
        self.identities = identities

    def __getitem__(self, index: int) -> dict[str, Any] | BadFile | NotedSample:
        path, label = self.samples[index]
        try:
            image = self.load_image(index)
        except ImageReadError as error:
            return BadFile.from_error(error)
        item = {"image": self.transform(image=image)["image"]}
        if self.identities is None:
            item["identity"] = label
        else:
            item.update(index=label, identity=self.identities[label])
        return noted(item, path, image)


class FaceDataModule(ImageDataModule):
    """Identity folders for training, LFW's layout and pair lists for validation.

    ``head_kwargs()`` gives the task ``num_identities`` (the training folders); :meth:`verification_pairs` gives
    its metric the pairs. Paths are relative to the root (or absolute).

    Args:
        train_dir: one folder per training identity.
        include_unlabeled: add ``unlabeled_dir``'s images to the training set as identity -1: only a distilling
            task (``task.teacher``) learns from them.
        eval_dir: LFW's image folder; ``pairs``: its fold list; ``large_pairs``: a list without folds, used if
            the file exists (``python -m mnet_tasks.tasks.face_embedding.pairs`` writes one).
        crop_pct: validation resizes the shorter side to ``image_size / crop_pct`` and centre-crops; 1.0 for
            aligned crops such as the built-in faces, less for LFW's 250 px photos with the face in the middle.
    """

    synthetic_data = IDENTITIES
    expected_layout = (
        f"<root>/{TRAIN_DIR}/<identity>/*.jpg, <root>/{EVAL_DIR}/<name>/<name>_0001.jpg and <root>/{PAIRS_FILE}"
    )

    def __init__(
        self,
        *,
        train_dir: str = TRAIN_DIR,
        unlabeled_dir: str = UNLABELED_DIR,
        include_unlabeled: bool = False,
        eval_dir: str = EVAL_DIR,
        pairs: str = PAIRS_FILE,
        large_pairs: str | None = LARGE_PAIRS_FILE,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.train_dir = self.data_dir / train_dir
        self.unlabeled_dir = self.data_dir / unlabeled_dir
        self.include_unlabeled = include_unlabeled
        self.eval_dir = self.data_dir / eval_dir
        self.pairs_file = self.data_dir / pairs
        self.large_pairs_file = self.data_dir / large_pairs if large_pairs else None
        self._identities: list[str] | None = None
        self._pairs: list[Pair] | None = None

    def check_layout(self) -> None:
        for key, path, kind in (
            ("data.train_dir", self.train_dir, "folder"),
            ("data.eval_dir", self.eval_dir, "folder"),
            ("data.pairs", self.pairs_file, "file"),
        ):
            if not (path.is_dir() if kind == "folder" else path.is_file()):
                raise FileNotFoundError(
                    f"data.root={self.root}: no {kind} {path} ({key}); expected {self.expected_layout}"
                )
        if self.include_unlabeled and not self.unlabeled_dir.is_dir():
            raise FileNotFoundError(f"data.include_unlabeled=true but there is no folder {self.unlabeled_dir}")

    @property
    def class_names(self) -> list[str]:
        """The training identities: the folders of ``train_dir`` that hold an image."""
        if self._identities is None:
            folders = sorted(path for path in self.train_dir.iterdir() if path.is_dir())
            self._identities = [f.name for f in folders if any(is_image_file(p.name) for p in f.iterdir())]
            if not self._identities:
                raise ValueError(f"{self.train_dir} (data.train_dir) holds no identity folder with images")
        return self._identities

    def head_kwargs(self) -> dict[str, int]:
        return {"num_identities": len(self.class_names)}

    def train_dataloader(self) -> DataLoader:
        """Full batches only: the embedding's BatchNorm needs more than one face, and a last batch may hold one."""
        if self.train_set is None:
            raise RuntimeError("the train dataset is not built; call setup() first")
        return split_loader(self, self.train_set, "train", shuffle=True, collate_fn=self.collate_fn, drop_last=True)

    def pairs(self) -> list[Pair]:
        """LFW's fold pairs, then those of the large list that are not among them."""
        if self._pairs is None:
            pairs = read_pairs(self.pairs_file)
            if self.large_pairs_file is not None and self.large_pairs_file.is_file():
                known = {frozenset((p.first, p.second)) for p in pairs}
                extra = [p for p in read_pairs(self.large_pairs_file) if frozenset((p.first, p.second)) not in known]
                pairs += [Pair(p.first, p.second, NO_FOLD) for p in extra]
            elif self.large_pairs_file is not None:
                log.warning(
                    "no large pair list at %s (data.large_pairs): TAR at low false-accept rates needs more mismatched "
                    "pairs than %s has; python -m mnet_tasks.tasks.face_embedding.pairs writes one",
                    self.large_pairs_file,
                    self.pairs_file.name,
                )
            self._pairs = pairs
        return self._pairs

    def photos(self) -> list[tuple[str, int]]:
        """Every photo the pairs name, once, in a fixed order: the validation images."""
        return sorted({photo for pair in self.pairs() for photo in (pair.first, pair.second)})

    def verification_pairs(self) -> dict[str, Any]:
        """The pairs as :class:`~mnet_tasks.tasks.face_embedding.metrics.PairVerification` takes them: indices
        into :meth:`photos`, fold (-1 outside LFW's folds), same or not, and the number of photos."""
        index = {photo: i for i, photo in enumerate(self.photos())}
        pairs = self.pairs()
        return {
            "first": torch.tensor([index[p.first] for p in pairs], dtype=torch.long),
            "second": torch.tensor([index[p.second] for p in pairs], dtype=torch.long),
            "fold": torch.tensor([p.fold for p in pairs], dtype=torch.long),
            "same": torch.tensor([p.same for p in pairs], dtype=torch.bool),
            "num_images": len(index),
        }

    def build_dataset(self, split: str, transform: Callable[..., dict]) -> FaceDataset:
        return self._train_dataset(transform) if split == "train" else self._eval_dataset(transform)

    def _train_dataset(self, transform: Callable[..., dict]) -> FaceDataset:
        folders = [(self.train_dir / name, identity) for identity, name in enumerate(self.class_names)]
        if self.include_unlabeled:
            folders.append((self.unlabeled_dir, -1))
        files = [(path, label) for folder, label in folders for path in sorted(folder.rglob("*")) if path.is_file()]
        samples = [(path, label) for path, label in files if is_image_file(path.name)]
        unused = [path for path, _ in files if not is_image_file(path.name)]
        unlabeled = [sample for sample in samples if sample[1] < 0]
        dataset = FaceDataset(samples, transform)
        dataset.problems.update(unlabeled=len(unlabeled))
        dataset.unused_files = [BadFile(str(path), "not an image file, left out") for path in unused]
        return dataset

    def _eval_dataset(self, transform: Callable[..., dict]) -> FaceDataset:
        photos = self.photos()
        people = {name: i for i, name in enumerate(sorted({name for name, _ in photos}))}
        paths = [self.eval_dir / photo_path(*photo) for photo in photos]
        present = [(path, i) for i, path in enumerate(paths) if path.is_file()]
        dataset = FaceDataset(present, transform, identities=[people[name] for name, _ in photos])
        dataset.missing_files = [BadFile(str(path), MISSING) for path in paths if not path.is_file()]
        pairs = self.pairs()
        dataset.problems.update(
            pairs=len(pairs),
            fold_pairs=sum(p.fold != NO_FOLD for p in pairs),
            missing_images=len(dataset.missing_files),
        )
        return dataset
