"""Distillation end to end on the synthetic faces: a trained teacher, then a 0.25 MobileNet student that learns from
the teacher's outputs alone (ground-truth weight 0) and comes close to the teacher's mean AP."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import run_cli

from mnet_tasks import distill

# Small faces at 64 px: 800 labelled and 1200 unlabeled training images, 300 for validation.
FACES = [
    "data.synthetic.train_images=800",
    "data.synthetic.unlabeled_images=1200",
    "data.synthetic.val_images=300",
    "data.synthetic.test_images=0",
    "data.synthetic.image_width=64",
    "backbone.resolution=64",
    "data.batch_size=32",
    "trainer.enable_progress_bar=false",
]
# Allowed shortfall of the student's mean AP below its teacher's. The paper's students are within 0.5-2.3 points;
# these 6-epoch runs, the teacher online on every training batch, are within 0.017-0.061 over seeds and CPU kernel
# paths (tests/README.md), and a student that learns nothing is ~0.3 below.
ALLOWED_GAP = 0.12


def chance_map(run_dir: Path) -> float:
    """The mean AP of a random ranking: the mean positive rate of the validation images."""
    with open(run_dir / "attribute_ap.csv") as file:
        rates = [float(row["positive_rate"]) for row in csv.DictReader(file) if row["epoch"] == "0"]
    return sum(rates) / len(rates)


@pytest.mark.learning
def test_a_distilled_025_student_comes_close_to_its_trained_teacher(
    tmp_path: Path, data_dir: Path, learning_seed, bars
):
    rows = distill.main(
        [
            "experiment=attributes_distill",
            *FACES,
            "backbone.alpha=0.5",  # the teacher; the student's own override below wins for the student
            "trainer.max_epochs=6",
            "data.num_workers=2",
            "logger=none",
            "callbacks.lr_monitor=null",
            f"seed={learning_seed}",
            f"paths.data_dir={data_dir}",
            f"distill.output_dir={tmp_path}",
            "distill.students=[['backbone.alpha=0.25']]",
        ]
    )
    teacher, student = rows
    assert (teacher["job"], student["job"]) == ("teacher", "student_alpha0.25")
    assert teacher["status"] == student["status"] == "completed"
    chance = chance_map(tmp_path / "teacher")
    print(f"chance {chance:.3f}, teacher {teacher['val/map']:.3f}, student {student['val/map']:.3f}")
    bars.measure("teacher val/map above chance", teacher["val/map"] - chance, at_least=0.15)
    bars.measure("student val/map above chance", student["val/map"] - chance, at_least=0.15)
    bars.measure("teacher - student val/map", teacher["val/map"] - student["val/map"], at_most=ALLOWED_GAP)
    bars.check()
    assert student["madds"] < teacher["madds"] / 3 and student["params"] < teacher["params"] / 3

    record = json.loads((tmp_path / student["job"] / "metrics.json").read_text())
    # The student saw the teacher's last checkpoint (its validation outputs cached): teacher_map is its own result.
    assert record["metrics"]["final"]["val/teacher_map"] == pytest.approx(teacher["val/map"], abs=1e-4)
    assert [p.name.split("_")[1] for p in (tmp_path / "teacher_cache").iterdir()] == ["val"]  # training runs it online
    with open(tmp_path / "summary.csv") as file:
        assert [row["job"] for row in csv.DictReader(file)] == ["teacher", "student_alpha0.25"]


def test_attribute_task_from_the_command_line(tmp_path: Path, data_dir: Path) -> None:
    result = run_cli(
        ["task=attributes", *FACES, "trainer.max_epochs=1", "data.num_workers=0", f"paths.data_dir={data_dir}"],
        cwd=tmp_path,
    )
    (record_path,) = (tmp_path / "outputs" / "attributes" / "runs").rglob("metrics.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "completed" and record["dataset"] == "synthetic_faces"
    assert set(record["metrics"]["final"]) >= {"val/map", "val/mean_accuracy", "val/loss"}
    with open(record_path.parent / "attribute_ap.csv") as file:
        assert len(list(csv.DictReader(file))) == 14  # one validation, 14 attributes
    assert "val/map" in result.stdout
