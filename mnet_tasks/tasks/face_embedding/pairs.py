"""Verification pair lists in LFW's format: read, sampled and written.

LFW's ``pairs.txt`` starts with a header, ``<folds> <n>`` (``10 300``; ``pairsDevTrain.txt`` has just ``<n>``, one
fold), then per fold ``n`` matched pairs, ``name i j`` (photos ``i`` and ``j`` of one person), and ``n`` mismatched
pairs, ``name1 i name2 j``. Photo ``i`` of ``name`` is ``<name>/<name>_<iiii>.jpg`` in the image folder. A list
without a header is read as pairs outside any fold: the large list that TAR at a false-accept rate of 1e-4 needs
(LFW's 3,000 mismatched pairs measure 1e-3 at best).

``python -m mnet_tasks.tasks.face_embedding.pairs <image folder> <out.txt> --mismatched 100000`` writes such a list
for any folder in LFW's layout: every matched pair, and the given number of random mismatched ones.
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NO_FOLD = -1
PHOTO_NAME = re.compile(r"^(?P<name>.+)_(?P<number>\d{4})\.jpg$")


class PairsFormatError(ValueError):
    """A pair list that does not follow LFW's format; the message names the file and line."""


@dataclass(frozen=True)
class Pair:
    """Two photos, each ``(identity, photo number counted from 1)``, and the LFW fold the pair belongs to."""

    first: tuple[str, int]
    second: tuple[str, int]
    fold: int = NO_FOLD

    @property
    def same(self) -> bool:
        return self.first[0] == self.second[0]

    def line(self) -> str:
        (name, i), (other, j) = self.first, self.second
        return f"{name}\t{i}\t{j}" if self.same else f"{name}\t{i}\t{other}\t{j}"


def photo_path(name: str, number: int) -> str:
    """LFW's file of photo ``number`` of ``name``, relative to the image folder."""
    return f"{name}/{name}_{number:04d}.jpg"


def _photo_number(text: str, where: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise PairsFormatError(f"{where}: photo number {text!r} is not a whole number from 1")
    return int(text)


def parse_pair_line(fields: Sequence[str], where: str, fold: int) -> Pair:
    """A matched (``name i j``) or mismatched (``name1 i name2 j``) line."""
    if len(fields) == 3:
        name, i, j = fields
        return Pair((name, _photo_number(i, where)), (name, _photo_number(j, where)), fold)
    if len(fields) == 4:
        name, i, other, j = fields
        if name == other:
            raise PairsFormatError(f"{where}: a mismatched pair names one person twice ({name}); write 'name i j'")
        return Pair((name, _photo_number(i, where)), (other, _photo_number(j, where)), fold)
    raise PairsFormatError(
        f"{where}: expected 'name i j' (matched) or 'name1 i name2 j' (mismatched), got {len(fields)} fields"
    )


def read_pairs(path: str | Path) -> list[Pair]:
    """The pairs of an LFW pair list, each with its fold (``NO_FOLD`` in a list without a header)."""
    path = Path(path)
    lines = [(number, line.split()) for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    if not lines:
        raise PairsFormatError(f"{path}: no pairs")
    header_number, header = lines[0]
    if len(header) in (1, 2) and all(field.isdigit() for field in header):
        folds, per_kind = (1, int(header[0])) if len(header) == 1 else (int(header[0]), int(header[1]))
        body = lines[1:]
        expected = folds * 2 * per_kind
        if folds < 1 or per_kind < 1 or len(body) != expected:
            raise PairsFormatError(
                f"{path}:{header_number}: the header gives {folds} fold(s) of {per_kind} matched and {per_kind} "
                f"mismatched pairs, {expected} pair lines, but the file has {len(body)}"
            )
        fold_of = [index // (2 * per_kind) for index in range(len(body))]
    else:
        body, fold_of = lines, [NO_FOLD] * len(lines)
    return [
        parse_pair_line(fields, f"{path}:{number}", fold) for (number, fields), fold in zip(body, fold_of, strict=True)
    ]


def write_pairs(path: str | Path, pairs: Sequence[Pair], folds: int | None = None) -> None:
    """Write ``pairs`` in LFW's format: with ``folds``, ``pairs.txt``'s (a header, then each fold's matched and
    mismatched pairs, as many of each in every fold); without, one line per pair in the given order, no header."""
    if folds is None:
        lines = [pair.line() for pair in pairs]
    else:
        per_fold = [[pair for pair in pairs if pair.fold == fold] for fold in range(folds)]
        counts = {(sum(p.same for p in fold), sum(not p.same for p in fold)) for fold in per_fold}
        if len(counts) != 1 or len({*next(iter(counts))}) != 1 or sum(map(len, per_fold)) != len(pairs):
            raise ValueError(f"every one of the {folds} folds needs as many matched as mismatched pairs, all alike")
        per_kind = len(per_fold[0]) // 2
        lines = [f"{folds}\t{per_kind}"]
        for fold in per_fold:
            lines += [pair.line() for pair in fold if pair.same] + [pair.line() for pair in fold if not pair.same]
    Path(path).write_text("\n".join(lines) + "\n")


def sample_pairs(
    photos: Mapping[str, int],
    matched: int | None,
    mismatched: int,
    rng: np.random.Generator,
    fold: int = NO_FOLD,
    exclude: frozenset[Pair] | set[Pair] = frozenset(),
) -> list[Pair]:
    """Distinct pairs of the photos ``photos`` counts per identity: ``matched`` same-identity pairs (``None``: all
    of them) and ``mismatched`` pairs of two identities, none twice and none of ``exclude`` (in either order)."""
    taken = {frozenset((p.first, p.second)) for p in exclude}
    candidates = [
        Pair((name, i), (name, j), fold)
        for name, count in photos.items()
        for i, j in itertools.combinations(range(1, count + 1), 2)
        if frozenset(((name, i), (name, j))) not in taken
    ]
    if matched is None:
        chosen = candidates
    elif matched > len(candidates):
        raise ValueError(f"{matched} matched pairs requested, but these photos give only {len(candidates)}")
    else:
        chosen = [candidates[i] for i in sorted(rng.choice(len(candidates), matched, replace=False))]
    names = list(photos)
    possible = (sum(photos.values()) ** 2 - sum(count**2 for count in photos.values())) // 2
    if mismatched > possible - len(taken):
        raise ValueError(f"{mismatched} mismatched pairs requested, but these photos give at most {possible}")
    seen = set(taken)
    different: list[Pair] = []
    while len(different) < mismatched:  # drawn in batches, repeats and same-identity draws dropped
        size = 2 * (mismatched - len(different)) + 16
        draws = zip(*(rng.integers(0, len(names), (2, size)).tolist()), *rng.random((2, size)).tolist(), strict=True)
        for a, b, u, v in draws:
            first = (names[a], 1 + int(u * photos[names[a]]))
            second = (names[b], 1 + int(v * photos[names[b]]))
            key = frozenset((first, second))
            if a != b and key not in seen and len(different) < mismatched:
                seen.add(key)
                different.append(Pair(first, second, fold))
    return chosen + different


def count_photos(folder: str | Path) -> dict[str, int]:
    """Photos per identity of a folder in LFW's layout (``<name>/<name>_0001.jpg`` ..., numbered from 1)."""
    counts = {}
    for person in sorted(path for path in Path(folder).iterdir() if path.is_dir()):
        numbers = sorted(int(m["number"]) for f in person.glob("*.jpg") if (m := PHOTO_NAME.match(f.name)))
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"{person}: photos are not named {person.name}_0001.jpg to _{len(numbers):04d}.jpg")
        if numbers:
            counts[person.name] = len(numbers)
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a large pair list (no folds) for an LFW-layout folder.")
    parser.add_argument("folder", type=Path, help="images as <name>/<name>_0001.jpg, e.g. lfw/")
    parser.add_argument("output", type=Path)
    parser.add_argument("--mismatched", type=int, default=100_000, help="random pairs of two identities")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    photos = count_photos(args.folder)
    pairs = sample_pairs(photos, None, args.mismatched, np.random.default_rng(args.seed))
    write_pairs(args.output, pairs)
    same = sum(p.same for p in pairs)
    lowest = 10 ** math.ceil(math.log10(1 / (len(pairs) - same))) if len(pairs) > same else None
    print(f"{args.output}: {same} matched and {len(pairs) - same} mismatched pairs (FAR measurable down to {lowest})")


if __name__ == "__main__":
    main()
