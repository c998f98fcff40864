"""The face-embedding task: its losses by hand, the teacher it loads, a run from the command line (metrics, ROC
picture, cost without the training-only head), export with int8, predict with pair verification, and the
teacher-then-students command."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import export_config, run_cli, tiny_data, train_tiny

from mnet_tasks import distill
from mnet_tasks.backbone import MobileNetV1
from mnet_tasks.config import compose_config
from mnet_tasks.cost import profile_model
from mnet_tasks.export import export
from mnet_tasks.predict import predict
from mnet_tasks.task_module import build_task
from mnet_tasks.tasks.face_embedding.adapter import FaceEmbeddingAdapter, nearest_neighbours
from mnet_tasks.tasks.face_embedding.module import CosFaceHead, FaceEmbeddingTask, embedding_distance
from mnet_tasks.teacher import TeacherSource
from mnet_tasks.trained import load_trained

# Tiny synthetic identities at 64 px: 12 training identities, 20 in "LFW" (10 folds of 2 + 2 pairs) and a large
# list of 1,000 mismatched pairs: FAR 1e-3 is measured, 1e-4 is not (the default monitor, TAR at FAR 1e-4, cannot be).
TINY_FACES = [*tiny_data("face_embedding"), "task.monitor=val/accuracy"]
OPTIMIZER = {"_target_": "torch.optim.SGD", "lr": 0.01}
SCHEDULE = {"name": "constant"}


def face_module(**kwargs) -> FaceEmbeddingTask:
    options = {"num_identities": 5, "embedding_dim": 8, "backbone": {"alpha": 0.25, "resolution": 64}, **kwargs}
    return FaceEmbeddingTask(optimizer=OPTIMIZER, lr_schedule=SCHEDULE, **options)


def test_the_distillation_loss_is_the_squared_distance_of_unit_embeddings() -> None:
    student = torch.tensor([[3.0, 4.0], [1.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[4.0, 3.0], [0.0, 2.0]])
    # unit vectors (0.6, 0.8) vs (0.8, 0.6): 0.04 + 0.04; (1, 0) vs (0, 1): 1 + 1
    distance = embedding_distance(student, teacher)
    assert distance.tolist() == pytest.approx([0.08, 2.0])
    cosine = F.cosine_similarity(student, teacher)
    assert distance.tolist() == pytest.approx((2 - 2 * cosine).tolist())
    assert embedding_distance(teacher * 5, teacher).abs().max() < 1e-6  # scale does not matter, only direction
    distance.mean().backward()
    assert student.grad.abs().sum() > 0


def test_cosface_logits_subtract_the_margin_at_the_true_identity_only() -> None:
    head = CosFaceHead(num_identities=3, embedding_dim=2, scale=10.0, margin=0.25)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    logits = head(torch.tensor([[1.0, 1.0]]), torch.tensor([1]))
    c = 1 / math.sqrt(2)  # cosines with the three directions: c, c, -c
    assert logits[0].tolist() == pytest.approx([10 * c, 10 * (c - 0.25), -10 * c])


def test_a_student_rebuilt_from_its_checkpoint_has_no_identity_head_and_no_teacher(tmp_path: Path) -> None:
    teacher = face_module()
    assert teacher.identity_head is not None
    path = tmp_path / "teacher.ckpt"
    torch.save(
        {"state_dict": teacher.state_dict(), "hyper_parameters": dict(teacher.hparams), "mnet_tasks": "face_embedding"},
        path,
    )
    student = face_module(teacher={"checkpoint": str(path)})
    assert student.identity_head is None and student.hparams.weight_decay == 0.0  # a student needs no labels
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = teacher.eval()(images)
    assert torch.allclose(student.teacher_embeddings(images), expected, atol=1e-6)  # the teacher's own embedding
    kwargs = FaceEmbeddingAdapter().rebuild_kwargs(FaceEmbeddingTask, dict(student.hparams))
    assert kwargs["teacher"] is None and kwargs["num_identities"] == 0
    with pytest.raises(ValueError, match=r"embeds in 8 dimensions but task\.embedding_dim=16"):
        face_module(embedding_dim=16, teacher={"checkpoint": str(path)})


def test_bad_task_options_name_their_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"task\.teacher\.timm=x needs task\.teacher\.weights"):
        face_module(teacher={"timm": "x"})
    with pytest.raises(ValueError, match=r"task\.teacher\.cache is not an option"):
        TeacherSource.from_config({"cache": True})
    with pytest.raises(ValueError, match=r"task\.embedding_dim must be a positive integer"):
        face_module(embedding_dim=0)
    with pytest.raises(ValueError, match="needs at least 2"):
        face_module(num_identities=1)
    headless = face_module(num_identities=0)  # a distilled student as export rebuilds it: no head, no teacher
    with pytest.raises(ValueError, match="nothing to learn from"):
        headless.training_step({"image": torch.randn(2, 3, 64, 64), "identity": torch.tensor([0, 1])}, 0)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"num_classes": 3}}, other)
    with pytest.raises(ValueError, match="not a checkpoint of the face_embedding task"):
        face_module(teacher={"checkpoint": str(other)})


def test_the_cost_counts_the_embedding_network_not_the_training_only_identity_head() -> None:
    cfg = compose_config(["task=face_embedding", "backbone.alpha=1.0", "backbone.rho=0.714"])
    module = build_task(cfg)  # with CASIA-WebFace's 10,575 identities in its CosFace head
    cost = profile_model(module, cfg.input_size)
    headless = profile_model(MobileNetV1(alpha=1.0, num_classes=0), 160)
    # 1.0 MobileNet-160 (Table 14's first row) and its 1024 -> 128 embedding layer, nothing of the identity head
    assert cfg.input_size == 160
    assert cost.madds == headless.madds + 1024 * 128
    assert cost.params == headless.params + 1024 * 128 + 128
    assert sum(p.numel() for p in module.parameters()) == cost.params + 10_575 * 128


def test_nearest_neighbour_score_counts_people_with_another_photo() -> None:
    embeddings = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    identities = np.array([0, 0, 1, 2, 3])  # 2 and 3 are alone: unscored
    assert nearest_neighbours(embeddings).tolist() == [1, 0, 3, 2, 2]  # the last: orthogonal beats opposite
    assert FaceEmbeddingAdapter().score(embeddings, identities) == (2.0, 2)


@pytest.fixture(scope="module")
def trained_face_model(tmp_path_factory, data_dir: Path) -> tuple[Path, list[str], dict]:
    return train_tiny(TINY_FACES, tmp_path_factory.mktemp("face_run"), data_dir)


def test_a_run_logs_table_14s_metrics_and_draws_the_roc(trained_face_model) -> None:
    checkpoint, _, record = trained_face_model
    final = record["metrics"]["final"]
    assert set(final) == {
        "val/accuracy",
        "val/accuracy_std",
        "val/tar_far_1e-3",
        "val/tar_far_1e-4",
        "val/auc",
        "val/threshold",
    }
    assert 0 <= final["val/accuracy"] <= 1 and 0 <= final["val/tar_far_1e-3"] <= 1
    assert math.isnan(final["val/tar_far_1e-4"])  # 1,020 mismatched pairs cannot measure 1e-4
    run_dir = checkpoint.parent.parent
    assert (run_dir / "roc.png").stat().st_size > 1000
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["val"]["samples"] == 60 and report["val"]["missing_images"] == 0
    assert record["params"] == profile_model(MobileNetV1(alpha=0.25, num_classes=128), 64).params


def test_export_int8_and_predict_with_pair_verification(trained_face_model, tmp_path: Path) -> None:
    checkpoint, data, _ = trained_face_model
    report = export(export_config(checkpoint, *data, f"output_dir={tmp_path}", "int8=true"))
    assert report["parity"]["passed"] and report["card"]["outputs"] == ["features", "embedding"]
    accuracy = report["int8"]["accuracy"]
    assert accuracy["metric"] == "nearest_neighbour_identity" and accuracy["scored"] == 60
    assert 0 <= accuracy["int8"] <= 1 and 0 <= accuracy["agreement"] <= 1  # of a barely trained model: no bar

    lfw = next(Path(data[-1].split("=", 1)[1]).glob("synthetic_identities-*")) / "lfw"
    first, second = sorted(lfw.iterdir())[:2]
    onnx = tmp_path / f"{checkpoint.stem}.onnx"
    result = predict(
        compose_config(
            [f"model={onnx}", f"images={first}", f"compare_with={second}", "threshold=0.5", f"output_dir={tmp_path}"],
            "predict",
        )
    )
    embeddings = np.array([r["embedding"] for r in result["predictions"]])
    assert embeddings.shape == (3, 128) and np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    with open(tmp_path / "verification.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 9 and {row["same"] for row in rows} <= {"True", "False"}
    other = np.array(
        [
            r["embedding"]
            for r in predict(
                compose_config([f"model={onnx}", f"images={second}", f"output_dir={tmp_path / 'b'}"], "predict")
            )["predictions"]
        ]
    )
    assert float(rows[0]["similarity"]) == pytest.approx(float((embeddings[0] @ other.T).max()), abs=1e-5)


def test_other_tasks_cannot_compare_folders(tmp_path: Path) -> None:
    from mnet_tasks.adapter import TaskAdapter
    from mnet_tasks.config import ConfigError

    with pytest.raises(ConfigError, match="compare_with"):
        TaskAdapter().verify(tmp_path, [], [], None)


def test_monitoring_a_far_the_pairs_cannot_measure_stops_before_training(tmp_path: Path, data_dir: Path) -> None:
    overrides = [*TINY_FACES, "task.monitor=val/tar_far_1e-4", "backbone.resolution=64", "data.num_workers=0"]
    result = run_cli([*overrides, f"paths.data_dir={data_dir}"], cwd=tmp_path, check=False)
    assert result.returncode != 0
    needs = r"task\.monitor=val/tar_far_1e-4 needs at least 10000 mismatched pairs, but the pair lists hold 10\d\d"
    assert re.search(needs, result.stderr)  # about 1,020, fewer where the large list repeats a pair of the folds


def test_unlabeled_faces_without_a_teacher_stop_before_reading_data(tmp_path: Path) -> None:
    result = run_cli(["task=face_embedding", "data.include_unlabeled=true"], cwd=tmp_path, check=False)
    assert result.returncode != 0 and "task.teacher.checkpoint" in result.stderr


def test_the_teacher_then_students_command(tmp_path: Path, data_dir: Path) -> None:
    rows = distill.main(
        [
            "experiment=face_embedding_distill",
            *TINY_FACES,
            "backbone.resolution=64",
            "backbone.alpha=0.25",
            "trainer.max_epochs=1",
            "data.num_workers=0",
            "trainer.enable_progress_bar=false",
            "logger=none",
            f"paths.data_dir={data_dir}",
            f"distill.output_dir={tmp_path}",
            "distill.students=[['backbone.alpha=0.25']]",
        ]
    )
    assert [row["job"] for row in rows] == ["teacher", "student_alpha0.25"]
    student = json.loads((tmp_path / "student_alpha0.25" / "metrics.json").read_text())
    final = student["metrics"]["final"]
    assert {"val/teacher_distance", "val/teacher_accuracy", "val/teacher_tar_far_1e-4"} <= set(final)
    assert 0 < final["val/teacher_distance"] < 4  # squared distance of unit vectors
    assert final["val/teacher_accuracy"] == pytest.approx(rows[0]["val/accuracy"], abs=1e-6)  # its best checkpoint
    assert (tmp_path / "student_alpha0.25" / "roc.png").is_file()
    trained = load_trained(student["checkpoint"], 1.0)  # as export, predict and the leaderboard rebuild it
    assert trained.module.identity_head is None and trained.card.outputs == ["features", "embedding"]
