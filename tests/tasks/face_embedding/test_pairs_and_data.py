"""LFW pair lists (both line formats, headers, bad lines), the identity-folder DataModule on a hand-written dataset
in the real layouts, and the verification pairs it gives the metric."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnet_tasks.tasks.face_embedding.data import MISSING, FaceDataModule
from mnet_tasks.tasks.face_embedding.metrics import PairVerification
from mnet_tasks.tasks.face_embedding.pairs import (
    NO_FOLD,
    Pair,
    PairsFormatError,
    count_photos,
    photo_path,
    read_pairs,
    sample_pairs,
    write_pairs,
)
from mnet_tasks.tasks.face_embedding.pairs import main as write_large_list

# LFW's own spelling: a tab-separated header "<folds> <pairs per kind>", matched "name i j", mismatched
# "name1 i name2 j", here 2 folds of 1 + 1 pairs.
LFW_PAIRS = (
    "2\t1\nAbel_Pacheco\t1\t4\nAbel_Pacheco\t2\tAkhmed_Zakayev\t3\n"
    "Amber_Tamblyn\t1\t2\nAbel_Pacheco\t1\tAmber_Tamblyn\t2\n"
)


def test_lfw_pairs_file_gives_each_pair_its_fold_and_kind(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(LFW_PAIRS)
    pairs = read_pairs(path)
    assert pairs == [
        Pair(("Abel_Pacheco", 1), ("Abel_Pacheco", 4), 0),
        Pair(("Abel_Pacheco", 2), ("Akhmed_Zakayev", 3), 0),
        Pair(("Amber_Tamblyn", 1), ("Amber_Tamblyn", 2), 1),
        Pair(("Abel_Pacheco", 1), ("Amber_Tamblyn", 2), 1),
    ]
    assert [p.same for p in pairs] == [True, False, True, False]
    assert photo_path("Abel_Pacheco", 4) == "Abel_Pacheco/Abel_Pacheco_0004.jpg"


def test_a_one_number_header_is_one_fold_and_no_header_is_a_list_without_folds(tmp_path: Path) -> None:
    dev = tmp_path / "pairsDevTest.txt"  # LFW's development lists: "<n>", then n matched and n mismatched
    dev.write_text("1\nA 1 2\nA 1 B 1\n")
    assert [p.fold for p in read_pairs(dev)] == [0, 0]
    large = tmp_path / "large.txt"
    large.write_text("A 1 2\n\nA 1 B 1\nB 2 C 1\n")  # blank lines are skipped
    assert [(p.fold, p.same) for p in read_pairs(large)] == [(NO_FOLD, True), (NO_FOLD, False), (NO_FOLD, False)]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("1 1\nA 1 2\nA 1 B\n", 3, "photo number 'B'"),  # read as matched "A 1 B": B is no photo number
        ("1 1\nA 1 2\nA 1 B 2 x\n", 3, "got 5 fields"),
        ("A 1 2\nA one B 2\n", 2, "photo number 'one'"),
        ("A 0 2\n", 1, "photo number '0'"),
        ("A 1 A 2\n", 1, "names one person twice"),
        ("10 300\nA 1 2\nA 1 B 2\n", 1, "6000 pair lines, but the file has 2"),
    ],
)
def test_a_bad_line_names_the_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    with pytest.raises(PairsFormatError, match=rf"pairs\.txt:{line}: .*{message}"):
        read_pairs(path)


def test_sampled_pairs_are_distinct_and_round_trip_through_lfw_format(tmp_path: Path) -> None:
    photos = {"A": 3, "B": 1, "C": 2}  # matched pairs: A gives 3, C gives 1
    rng = np.random.default_rng(0)
    folds = [sample_pairs(photos, 2, 2, rng, fold=fold) for fold in range(2)]
    assert all(sum(p.same for p in fold) == 2 for fold in folds)
    every = sample_pairs(photos, None, 11, rng)  # all 4 matched, all 11 mismatched ones (3*1 + 3*2 + 1*2)
    assert len({frozenset((p.first, p.second)) for p in every}) == 15
    with pytest.raises(ValueError, match="at most 11"):
        sample_pairs(photos, 0, 12, rng)
    path = tmp_path / "pairs.txt"
    write_pairs(path, folds[0] + folds[1], folds=2)
    assert path.read_text().splitlines()[0] == "2\t2"
    assert read_pairs(path) == [p for fold in folds for p in sorted(fold, key=lambda p: not p.same)]


def write_faces(root: Path) -> Path:
    """Two training identities (one with a stray text file), an unlabeled face, LFW with one listed photo missing."""

    def photo(path: Path, shade: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), (shade, 100, 200 - shade)).save(path)

    for identity, shade in (("id_a", 10), ("id_b", 60)):
        for number in (1, 2):
            photo(root / "train" / identity / f"{number}.jpg", shade + number)
    (root / "train" / "id_a" / "notes.txt").write_text("not a face")
    (root / "train" / "empty").mkdir()
    photo(root / "unlabeled" / "face.jpg", 200)
    for name, numbers in (("Ann", (1, 2)), ("Bob", (1,))):  # Bob_0002 is listed but missing
        for number in numbers:
            photo(root / "lfw" / photo_path(name, number), 30 * number)
    (root / "pairs.txt").write_text("1\t2\nAnn\t1\t2\nBob\t1\t2\nAnn\t1\tBob\t1\nAnn\t2\tBob\t2\n")
    (root / "pairs_large.txt").write_text("Ann\t1\t2\nAnn\t2\tBob\t1\n")  # one pair already in pairs.txt
    return root


def face_data(root: Path, **options) -> FaceDataModule:
    return FaceDataModule(root=str(root), image_size=32, batch_size=8, num_workers=0, **options)


def test_the_datamodule_reads_identity_folders_and_every_listed_photo_once(tmp_path: Path) -> None:
    data = face_data(write_faces(tmp_path / "faces"), include_unlabeled=True)
    data.prepare_data()
    assert data.head_kwargs() == {"num_identities": 2}  # the empty folder is no identity
    data.setup("fit")
    train = [data.train_set[i] for i in range(len(data.train_set))]
    assert sorted(item["identity"] for item in train) == [-1, 0, 0, 1, 1]
    assert data.train_set.unused_files[0].path.endswith("notes.txt")

    assert data.photos() == [("Ann", 1), ("Ann", 2), ("Bob", 1), ("Bob", 2)]
    pairs = data.verification_pairs()
    # pairs.txt's 4 (fold 0), then the large list's pair that pairs.txt lacks
    assert pairs["first"].tolist() == [0, 2, 0, 1, 1]
    assert pairs["second"].tolist() == [1, 3, 2, 3, 2]
    assert pairs["fold"].tolist() == [0, 0, 0, 0, NO_FOLD]
    assert pairs["same"].tolist() == [True, True, False, False, False]
    assert pairs["num_images"] == 4
    val = data.val_set
    assert [index for _, index in val.samples] == [0, 1, 2]  # Bob_0002 is missing
    assert [m.reason for m in val.missing_files] == [MISSING]
    assert val.problems["missing_images"] == 1
    assert [val[i]["identity"] for i in range(3)] == [0, 0, 1]  # Ann, Ann, Bob

    # The metric scores what was read; the two pairs with the missing photo are counted, not fatal.
    metric = PairVerification(**pairs)
    loader = data.val_dataloader()
    for batch in loader:
        metric.update(batch["image"].flatten(1), batch["index"])
    assert metric.compute()["missing_pairs"] == 2
    missing = str(tmp_path / "faces" / "lfw" / photo_path("Bob", 2))
    assert data.skipped_files.reasons == {("val", missing): MISSING}  # in skipped_files.csv, held against the limit
    assert all(pairs[k].dtype == torch.long for k in ("first", "second", "fold")) and pairs["same"].dtype == torch.bool


def test_without_a_large_list_the_run_warns_how_to_write_one(tmp_path: Path, caplog) -> None:
    root = write_faces(tmp_path / "faces")
    (root / "pairs_large.txt").unlink()
    data = face_data(root)
    with caplog.at_level(logging.WARNING):
        assert len(data.pairs()) == 4
    assert "mnet_tasks.tasks.face_embedding.pairs writes one" in caplog.text


@pytest.mark.parametrize(
    ("remove", "key"), [("train", "data.train_dir"), ("lfw", "data.eval_dir"), ("pairs.txt", "data.pairs")]
)
def test_a_root_without_the_layout_names_the_key(tmp_path: Path, remove: str, key: str) -> None:
    root = write_faces(tmp_path / "faces")
    target = root / remove
    if target.is_dir():
        for path in sorted(target.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(FileNotFoundError, match=key):
        face_data(root).prepare_data()


def test_the_large_list_command_writes_every_matched_pair_and_the_mismatched_ones(tmp_path: Path, capsys) -> None:
    root = write_faces(tmp_path / "faces")
    (root / "lfw" / photo_path("Bob", 2)).parent.mkdir(exist_ok=True)
    Image.new("RGB", (8, 8)).save(root / "lfw" / photo_path("Bob", 2))
    write_large_list([str(root / "lfw"), str(tmp_path / "large.txt"), "--mismatched", "4"])
    pairs = read_pairs(tmp_path / "large.txt")
    assert sum(p.same for p in pairs) == 2 and sum(not p.same for p in pairs) == 4
    assert "FAR measurable down to 1" in capsys.readouterr().out
    assert count_photos(root / "lfw") == {"Ann": 2, "Bob": 2}
    Image.new("RGB", (8, 8)).save(root / "lfw" / "Bob" / "Bob_0004.jpg")  # Bob_0003 missing: not LFW's numbering
    with pytest.raises(ValueError, match=r"Bob_0001\.jpg to _0003\.jpg"):
        count_photos(root / "lfw")
