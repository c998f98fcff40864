"""The built-in synthetic identities: the real datasets' layouts, LFW's pair lists, determinism, and faces that
carry their identity."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnet_tasks.tasks.face_embedding import synthetic as identities
from mnet_tasks.tasks.face_embedding.synthetic import IDENTITIES

# 20 eval identities in 10 folds: 2 identities of 3 photos per fold give 6 matched and 9 mismatched pairs.
TINY = {
    "train_identities": 6,
    "photos_per_identity": 3,
    "unlabeled_images": 4,
    "eval_identities": 20,
    "eval_photos_per_identity": 3,
    "folds": 10,
    "pairs_per_fold": 2,
    "large_mismatched": 50,
    "image_size": 48,
}
LFW_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")  # LFW's names: no spaces, e.g. Aaron_Peirsol


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return IDENTITIES.generate(tmp_path_factory.mktemp("identities") / "data", **TINY)


def photo_names(name: str, count: int) -> list[str]:
    return [f"{name}_{number:04d}.jpg" for number in range(1, count + 1)]


def pair_lines(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def photo(fields: list[str]) -> list[tuple[str, int]]:
    """The two photos of a matched (``name i j``) or mismatched (``name1 i name2 j``) line."""
    if len(fields) == 3:
        return [(fields[0], int(fields[1])), (fields[0], int(fields[2]))]
    assert len(fields) == 4 and fields[0] != fields[2], fields
    return [(fields[0], int(fields[1])), (fields[2], int(fields[3]))]


def test_the_layout_holds_every_identity_and_photo(root: Path) -> None:
    train = sorted(path.name for path in (root / identities.TRAIN_DIR).iterdir())
    assert train == [f"id_{number:05d}" for number in range(1, 7)]
    for name in train:
        assert sorted(path.name for path in (root / "train" / name).iterdir()) == photo_names(name, 3)
    people = sorted(path.name for path in (root / identities.EVAL_DIR).iterdir())
    assert len(people) == 20 and all(LFW_NAME.match(name) for name in people) and not set(people) & set(train)
    for name in people:
        assert sorted(path.name for path in (root / "lfw" / name).iterdir()) == photo_names(name, 3)
    unlabeled = sorted(path.name for path in (root / identities.UNLABELED_DIR).iterdir())
    assert unlabeled == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    with Image.open(root / "lfw" / people[-1] / f"{people[-1]}_0003.jpg") as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (48, 48))


def test_pairs_txt_has_identity_disjoint_folds_in_lfw_format(root: Path) -> None:
    header, *lines = pair_lines(root / identities.PAIRS_FILE)
    assert header == ["10", "2"] and len(lines) == 10 * 4
    fold_of: dict[str, int] = {}
    for fold in range(10):
        block = lines[4 * fold : 4 * fold + 4]
        assert [len(fields) for fields in block] == [3, 3, 4, 4]  # n matched, then n mismatched
        assert len({frozenset(photo(fields)) for fields in block}) == 4  # no pair twice
        for first, second in map(photo, block):
            for name, number in (first, second):
                assert (root / "lfw" / name / f"{name}_{number:04d}.jpg").is_file()
                assert fold_of.setdefault(name, fold) == fold  # each identity in one fold only
            assert first != second
    assert len(fold_of) == 20  # each fold's pairs use both of its identities


def test_the_large_list_has_every_matched_pair_and_the_mismatched_ones_asked_for(root: Path) -> None:
    lines = pair_lines(root / identities.LARGE_PAIRS_FILE)
    pairs = [frozenset(photo(fields)) for fields in lines]  # also: no header line
    matched = {frozenset(photo(fields)) for fields in lines if len(fields) == 3}
    people = sorted(path.name for path in (root / "lfw").iterdir())
    every = {frozenset({(name, i), (name, j)}) for name in people for i, j in itertools.combinations((1, 2, 3), 2)}
    assert matched == every
    assert len(pairs) == len(set(pairs)) == len(every) + 50
    for pair in pairs:
        assert all((root / "lfw" / name / f"{name}_{number:04d}.jpg").is_file() for name, number in pair)


def files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_generation_is_byte_identical_and_each_image_has_its_own_seed(root: Path, tmp_path: Path) -> None:
    assert files(IDENTITIES.generate(tmp_path / "again", **TINY)) == files(root)
    # Fewer identities and photos: the images that remain are the same, whatever else is drawn.
    fewer = files(IDENTITIES.generate(tmp_path / "fewer", **{**TINY, "train_identities": 2, "unlabeled_images": 1}))
    assert fewer["train/id_00002/id_00002_0003.jpg"] == files(root)["train/id_00002/id_00002_0003.jpg"]
    assert fewer["unlabeled/000001.jpg"] == files(root)["unlabeled/000001.jpg"]
    other = IDENTITIES.generate(tmp_path / "seed", **{**TINY, "seed": 1, "large_mismatched": 0})
    assert files(other)["lfw/Person_0001/Person_0001_0001.jpg"] != files(root)["lfw/Person_0001/Person_0001_0001.jpg"]


def test_photos_of_one_identity_are_more_alike_than_photos_of_two(root: Path) -> None:
    """On 12x12 grey images, each brightness-normalised, the mean distance of one identity's photos is well below
    that to other identities' photos. A generator that ignored the identity would give a ratio near 1, one that
    ignored the photo's nuisances (pose, light, background) near 0."""
    folders = sorted([*(root / "train").iterdir(), *(root / "lfw").iterdir()])
    vectors = []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            with Image.open(path) as image:
                grey = np.asarray(image.convert("L").resize((12, 12), Image.Resampling.BOX), dtype=np.float64)
            vectors.append((grey.ravel() - grey.mean()) / grey.std())
    owner = np.repeat(np.arange(len(folders)), 3)
    distances = np.linalg.norm(np.array(vectors)[:, None] - np.array(vectors)[None], axis=-1)
    same, other = owner[:, None] == owner[None], owner[:, None] != owner[None]
    np.fill_diagonal(same, False)
    ratio = np.mean([distances[i][same[i]].mean() / distances[i][other[i]].mean() for i in range(len(vectors))])
    assert 0.3 < ratio < 0.85


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"eval_identities": 25}, "eval_identities"),  # not a multiple of the 10 folds
        ({"folds": 20}, "folds"),  # one identity per fold: no mismatched pair
        ({"pairs_per_fold": 7}, "pairs_per_fold"),  # a fold gives 6 matched pairs
        ({"large_mismatched": 20 * 19 // 2 * 9 + 1}, "large_mismatched"),
        ({"image_size": 16}, "image_size"),
    ],
)
def test_a_bad_parameter_is_refused_naming_its_key(tmp_path: Path, change: dict, key: str) -> None:
    with pytest.raises(ValueError, match=rf"^synthetic_identities: data\.synthetic\.{key} must be"):
        IDENTITIES.generate(tmp_path / "data", **{**TINY, **change})
    assert not any(tmp_path.iterdir())
