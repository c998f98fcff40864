"""CelebA lists with bad files: missing and unreadable images skipped, named and counted."""

from __future__ import annotations

from pathlib import Path

from conftest import CONVERTED, NOT_IMAGES, TINY, UNREADABLE, photo, write_bad_kinds

from mnet_tasks.tasks.attributes.data import CelebADataModule


def write_celeba_with_bad_files(root: Path) -> None:
    """CelebA lists: 8 train images (the bad kinds among them) and 2 val; one listed train image is not on disk."""
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    for i in range(4):
        photo().save(images / f"good_{i}.jpg")
    write_bad_kinds(images)
    names = [*sorted(p.name for p in images.iterdir() if p.name not in NOT_IMAGES), "listed_but_missing.jpg"]
    val = ["good_0.jpg", "good_1.jpg"]
    lines = [f"{name} {'1' if i % 2 else '-1'} -1" for i, name in enumerate(names)]
    (root / "list_attr_celeba.txt").write_text(f"{len(names)}\nSmiling Young\n" + "\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {1 if n in val else 0}\n" for n in names))


def test_celeba_skips_missing_and_unreadable_files(tmp_path: Path) -> None:
    root = tmp_path / "celeba"
    write_celeba_with_bad_files(root)
    data = CelebADataModule(root=str(root), image_size=32, batch_size=4, num_workers=0)
    data.prepare_data()
    data.setup("fit")
    seen = sum(len(batch["index"]) for batch in data.train_dataloader())

    trainable = 2 + len(CONVERTED) + 1  # good_2, good_3, the converted ones and the tiny one
    assert seen == trainable
    skipped = {Path(path).name: reason for (_, path), reason in data.skipped_files.reasons.items()}
    assert skipped == {
        "listed_but_missing.jpg": "missing file, listed in list_eval_partition.txt",
        **{name: skipped[name] for name in UNREADABLE},
    }
    assert data.data_report()["train"] == {
        "samples": trainable + len(UNREADABLE),
        "image listed in list_eval_partition.txt but missing, dropped": 1,
        "file in img_align_celeba not in list_eval_partition.txt, not used": len(NOT_IMAGES),
    }
    # every file in the image folder is used or named: the unlisted ones as not used, the tiny one as upscaled
    notes = {Path(path).name: reason for (_, path), reason in data.skipped_files.notes.items()}
    assert {name: notes[name] for name in NOT_IMAGES} == dict.fromkeys(
        NOT_IMAGES, "not in list_eval_partition.txt, not used"
    )
    assert notes[TINY].startswith("tiny image (1x1 px)")
