"""Face attributes: CelebA list files, the DataModule, synthetic faces, the distillation loss and the teacher."""

from __future__ import annotations

import csv
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import save_file

from mnet_tasks.model_card import Head, ModelCard
from mnet_tasks.tasks.attributes import synthetic as faces
from mnet_tasks.tasks.attributes.adapter import AttributesAdapter
from mnet_tasks.tasks.attributes.data import (
    CelebADataModule,
    CelebAFormatError,
    read_attribute_file,
    read_attribute_names,
    read_partition_file,
)
from mnet_tasks.tasks.attributes.module import (
    AttributeTask,
    TeacherOptions,
    distillation_loss,
    emulation_cross_entropy,
    load_teacher,
)

NAMES = ["Bangs", "Eyeglasses", "Smiling"]
# Spaced as CelebA's own file: a trailing space after the names, two spaces before a positive value.
ATTRIBUTES = (
    "5\nBangs Eyeglasses Smiling \na.jpg  1 -1 -1\nb.jpg -1  1 -1\nc.jpg -1 -1  1\nd.jpg  1  1  1\nv.jpg -1  1  1\n\n"
)
# a, b, c: labelled train; u: unlabeled train (no attribute line); v: val; t: test, without labels (skipped);
# d: labelled but in no split (skipped).
PARTITION = "a.jpg 0\nb.jpg 0\nu.jpg 0\nc.jpg 0\nv.jpg 1\nt.jpg 2\n"
TINY_MODEL = {"alpha": 0.25, "drop_rate": 0.0}
OPTIMIZER = {"_target_": "torch.optim.SGD", "lr": 0.01}
SCHEDULE = {"name": "constant"}


def write_celeba(root: Path, attributes: str = ATTRIBUTES, partition: str = PARTITION) -> Path:
    (root / "img_align_celeba").mkdir(parents=True)
    for i, name in enumerate("abcdtuv"):
        colour = (30 * i, 100, 200 - 20 * i)
        Image.new("RGB", (40, 49), colour).save(root / "img_align_celeba" / f"{name}.jpg")
    (root / "list_attr_celeba.txt").write_text(attributes)
    (root / "list_eval_partition.txt").write_text(partition)
    return root


def attribute_module(teacher: dict | None = None, normalize: dict | None = None, **kwargs) -> AttributeTask:
    return AttributeTask(NAMES, {**TINY_MODEL, **kwargs}, OPTIMIZER, SCHEDULE, teacher=teacher, normalize=normalize)


def save_teacher_checkpoint(path: Path, module: AttributeTask) -> Path:
    """What Lightning's checkpoint holds for a teacher: the state_dict and the hyper_parameters."""
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


# --- list files -----------------------------------------------------------------------------------


def test_attribute_file_gives_names_images_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(ATTRIBUTES)
    table = read_attribute_file(path)
    assert table.names == tuple(NAMES) and read_attribute_names(path) == NAMES
    assert table.images == ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "v.jpg")
    expected = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0, 1, 1]]
    np.testing.assert_array_equal(table.labels, np.array(expected, dtype=np.float32))


def test_celeba_files_with_a_utf8_byte_order_mark_are_read(tmp_path: Path) -> None:
    attributes, partition = tmp_path / "list_attr_celeba.txt", tmp_path / "list_eval_partition.txt"
    attributes.write_text(ATTRIBUTES, encoding="utf-8-sig")
    partition.write_text(PARTITION, encoding="utf-8-sig")
    assert read_attribute_file(attributes).images == ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "v.jpg")
    assert read_attribute_names(attributes) == NAMES
    assert read_partition_file(partition)["a.jpg"] == "train"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "2\nBangs Smiling\na.jpg 1 -1\nb.jpg 1\n",
            r"line 4: expected an image name and 2 attribute values .* found 1",
        ),
        ("1\nBangs Smiling\na.jpg 1 0\n", r"line 3: attribute Smiling of a.jpg is '0'; expected -1 or 1"),
        ("1\nBangs Smiling\na.jpg 1 -1 1\n", r"line 3: expected an image name and 2 attribute .* found 3"),
        ("3\nBangs Smiling\na.jpg 1 -1\n", r"line 1: says 3 images but the file lists 1"),
        ("many\nBangs\na.jpg 1\n", r"line 1: expected the number of images, found 'many'"),
        ("2\nBangs\na.jpg 1\na.jpg -1\n", r"line 4: a.jpg is listed again \(first on line 3\)"),
        ("1\nBangs Bangs\na.jpg 1 1\n", r"line 2: attribute names repeat: Bangs"),
        ("1\n\na.jpg 1\n", r"expected the image count on line 1 and the attribute names on line 2"),
    ],
)
def test_malformed_attribute_file_names_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(text)
    with pytest.raises(CelebAFormatError, match=expected) as error:
        read_attribute_file(path)
    assert str(path) in str(error.value)


def test_partition_file_maps_images_to_splits(tmp_path: Path) -> None:
    path = tmp_path / "list_eval_partition.txt"
    path.write_text(PARTITION + "\n")
    splits = read_partition_file(path)
    assert splits == {
        "a.jpg": "train",
        "b.jpg": "train",
        "u.jpg": "train",
        "c.jpg": "train",
        "v.jpg": "val",
        "t.jpg": "test",
    }


@pytest.mark.parametrize(
    ("text", "line"), [("a.jpg 0\nb.jpg 3\n", 2), ("a.jpg\n", 1), ("a.jpg 0 1\n", 1), ("a.jpg 0\na.jpg 1\n", 2)]
)
def test_malformed_partition_file_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "list_eval_partition.txt"
    path.write_text(text)
    with pytest.raises(CelebAFormatError, match=rf"{path}, line {line}: "):
        read_partition_file(path)


# --- the DataModule -------------------------------------------------------------------------------


def test_datamodule_splits_labelled_and_unlabeled_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_celeba(tmp_path / "celeba")
    (root / "extra").mkdir()
    for name in ("x1.png", "x2.png"):
        Image.new("RGB", (40, 49)).save(root / "extra" / name)
    (root / "extra" / "notes.txt").write_text("not an image: skipped")
    labelled_only = CelebADataModule(root=str(root), image_size=32, batch_size=8, num_workers=0)
    labelled_only.prepare_data()
    assert labelled_only.head_kwargs() == {"attribute_names": NAMES}
    with caplog.at_level(logging.WARNING):
        labelled_only.setup("fit")
    assert (
        "1 labelled images have no line" in caplog.text
        and "1 val/test images have no attribute line in list_attr_celeba.txt" in caplog.text
    )
    assert [p.name for p, _ in labelled_only.train_set.samples] == ["a.jpg", "b.jpg", "c.jpg"]

    everything = CelebADataModule(
        root=str(root), image_size=32, batch_size=8, num_workers=0, include_unlabeled=True, unlabeled_dir="extra"
    )
    everything.prepare_data()
    everything.setup(None)
    assert [p.name for p, _ in everything.train_set.samples] == ["a.jpg", "b.jpg", "c.jpg", "u.jpg", "x1.png", "x2.png"]
    batch = next(iter(everything.train_dataloader()))
    order = batch["index"].tolist()
    assert sorted(order) == list(range(6)) and batch["image"].shape == (6, 3, 32, 32)
    names = [everything.train_set.samples[i][0].name for i in order]
    expected = {"a.jpg": [1, 0, 0], "b.jpg": [0, 1, 0], "c.jpg": [0, 0, 1]}
    for name, target, labeled in zip(names, batch["target"].tolist(), batch["labeled"].tolist(), strict=True):
        assert labeled == (name in expected)
        assert target == expected.get(name, [0, 0, 0])
    val = next(iter(everything.val_dataloader()))
    assert val["target"].tolist() == [[0, 1, 1]] and len(everything.test_set) == 0  # t.jpg has no labels
    unaugmented = everything.unaugmented_dataloader("train", 48)
    assert next(iter(unaugmented))["image"].shape == (6, 3, 48, 48)
    assert [p for p, _ in unaugmented.dataset.samples] == [p for p, _ in everything.train_set.samples]


def test_datamodule_names_missing_files(tmp_path: Path, caplog) -> None:
    root = write_celeba(tmp_path / "celeba")
    (root / "img_align_celeba" / "c.jpg").unlink()
    datamodule = CelebADataModule(root=str(root), image_size=32, num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("fit")  # a listed image that is missing is skipped and reported, as every loader does
    assert [p.name for p, _ in datamodule.train_set.samples] == ["a.jpg", "b.jpg"]
    assert re.search(r"1 images listed in .*list_eval_partition.txt are not in .*c.jpg", caplog.text)
    (root / "list_attr_celeba.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing .*list_attr_celeba.txt .*data.root"):
        CelebADataModule(root=str(root), image_size=32).prepare_data()


def test_synthetic_faces_are_written_in_the_celeba_layout(tmp_path: Path) -> None:
    params = {"train_images": 5, "unlabeled_images": 3, "val_images": 2, "test_images": 1, "image_width": 40}
    root = faces.FACES.generate(tmp_path / faces.FACES.folder_name(**params), **params)
    table = read_attribute_file(root / "list_attr_celeba.txt")
    partition = read_partition_file(root / "list_eval_partition.txt")
    assert table.names == faces.ATTRIBUTE_NAMES and len(table.images) == 8  # the count line was checked too
    assert list(partition.values()) == ["train"] * 8 + ["val"] * 2 + ["test"]
    unlabeled = [image for image in partition if image not in table.images]
    assert unlabeled == ["000006.jpg", "000007.jpg", "000008.jpg"]
    with Image.open(root / "img_align_celeba" / "000011.jpg") as image:
        assert image.size == (40, 49)  # CelebA's 178:218 aspect
    hair = table.labels[:, [table.names.index(name) for name, _, _ in faces.HAIR_COLOURS]]
    assert (hair.sum(1) == 1).all()  # exactly one hair colour per face


# --- distillation loss and the teacher ------------------------------------------------------------


def test_distillation_loss_is_zero_for_a_perfect_student_and_has_the_cross_entropy_gradient() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(8, 5) * 3
    assert distillation_loss(teacher.clone(), teacher) == 0
    teacher_probabilities = torch.sigmoid(teacher)
    entropy = -(
        teacher_probabilities * teacher_probabilities.log() + (1 - teacher_probabilities) * (-teacher).sigmoid().log()
    )
    # At the teacher the emulation cross-entropy is the teacher's own entropy: its minimum, not 0.
    torch.testing.assert_close(emulation_cross_entropy(teacher, teacher_probabilities), entropy.mean())

    student = torch.randn(8, 5, requires_grad=True)
    loss = distillation_loss(student, teacher)
    assert loss > 0
    (from_distillation,) = torch.autograd.grad(loss, student)
    (from_cross_entropy,) = torch.autograd.grad(emulation_cross_entropy(student, teacher_probabilities), student)
    torch.testing.assert_close(from_distillation, from_cross_entropy)
    torch.testing.assert_close(from_distillation, (torch.sigmoid(student) - teacher_probabilities) / student.numel())


def test_teacher_is_frozen_and_only_the_student_learns(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = attribute_module(alpha=0.5, normalize={"mean": [0.5] * 3, "std": [0.5] * 3})  # TF-style inputs
    checkpoint = save_teacher_checkpoint(tmp_path / "teacher.ckpt", trained)
    student = attribute_module(teacher={"checkpoint": str(checkpoint), "cache": False})  # ImageNet's mean and std
    teacher = student.teacher
    assert student.hparams.weight_decay == 0.0 and trained.hparams.weight_decay == 4e-5  # the paper's note
    assert teacher.input_size == 224 and teacher.network.alpha == 0.5
    images = torch.randn(2, 3, 64, 64)
    mean, std = (torch.tensor(student.normalize[key]).view(1, 3, 1, 1) for key in ("mean", "std"))
    in_teacher_terms = (images * std + mean - 0.5) / 0.5  # the same pixels, normalised as the teacher was trained
    resized = torch.nn.functional.interpolate(in_teacher_terms, size=(224, 224), mode="bilinear", antialias=True)
    torch.testing.assert_close(teacher(images, student.normalize), trained.eval()(resized))  # the checkpoint's network

    # the teacher is not part of the student: not in its checkpoint, its parameters or its train() calls
    assert not any(name.startswith("teacher") for name in student.state_dict())
    assert all(p.requires_grad for p in student.parameters()) and sum(1 for _ in student.parameters()) == sum(
        1 for _ in student.backbone.parameters()
    )
    student.train()
    assert not teacher.network.training and not any(p.requires_grad for p in teacher.network.parameters())
    before = {k: v.clone() for k, v in teacher.network.state_dict().items()}

    batch = {
        "image": images,
        "target": torch.zeros(2, 3),
        "labeled": torch.tensor([True, False]),
        "index": torch.arange(2),
    }
    student.log = lambda *args, **kwargs: None  # outside a Trainer
    student.training_step(batch, 0).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.backbone.classifier.parameters())
    assert all(p.grad is None for p in teacher.network.parameters())
    assert all(torch.equal(v, before[k]) for k, v in teacher.network.state_dict().items())  # BN statistics too


def test_a_timm_teacher_is_built_from_its_name_and_weight_file(tmp_path: Path) -> None:
    import timm

    network = timm.create_model("mnet_mobilenet_v1_025", num_classes=3).eval()
    save_file(network.state_dict(), tmp_path / "teacher.safetensors")
    options = TeacherOptions.from_config(
        {"timm": "mnet_mobilenet_v1_025", "weights": str(tmp_path / "teacher.safetensors")}
    )
    teacher = load_teacher(options, NAMES)
    images = torch.randn(1, 3, 224, 224)
    assert teacher.input_size == 224
    assert teacher.normalize == {
        "mean": list(network.pretrained_cfg["mean"]),
        "std": list(network.pretrained_cfg["std"]),
    }
    torch.testing.assert_close(teacher(images, teacher.normalize), network(images))
    with pytest.raises(
        ValueError, match=r"task.teacher.weights=.* does not fit timm model mnet_mobilenet_v1_025 with 4"
    ):
        load_teacher(options, [*NAMES, "Mustache"])


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"checkpoint": "a.ckpt", "timm": "resnet18", "weights": "w.pth"}, "either checkpoint or timm"),
        ({"timm": "resnet18"}, "task.teacher.timm=resnet18 needs task.teacher.weights"),
        ({"weights": "w.pth"}, "set task.teacher.timm"),
        ({"checkpoint": "a.ckpt", "cache_folder": "x"}, "task.teacher.cache_folder is not an option"),
    ],
)
def test_teacher_options_are_checked(options: dict, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        TeacherOptions.from_config(options)


def test_a_teacher_checkpoint_must_predict_the_same_attributes(tmp_path: Path) -> None:
    checkpoint = save_teacher_checkpoint(tmp_path / "teacher.ckpt", attribute_module())
    with pytest.raises(ValueError, match=r"predicts the attributes \['Bangs', 'Eyeglasses', 'Smiling'\], but the data"):
        AttributeTask(["Bangs", "Smiling"], TINY_MODEL, OPTIMIZER, SCHEDULE, teacher={"checkpoint": str(checkpoint)})
    torch.save({"state_dict": {}, "hyper_parameters": {"num_classes": 3}}, tmp_path / "classifier.ckpt")
    with pytest.raises(ValueError, match="is not a checkpoint of the attributes task"):
        attribute_module(teacher={"checkpoint": str(tmp_path / "classifier.ckpt")})
    with pytest.raises(FileNotFoundError, match=r"task\.teacher\.checkpoint: no file at"):
        attribute_module(teacher={"checkpoint": str(tmp_path / "missing.ckpt")})


def test_unlabeled_images_need_a_teacher() -> None:
    module = attribute_module()
    batch = {"image": torch.randn(2, 3, 32, 32), "target": torch.zeros(2, 3), "labeled": torch.tensor([True, False])}
    with pytest.raises(ValueError, match=r"unlabeled images .*data.include_unlabeled=true.* task.teacher is not set"):
        module.training_step(batch, 0)


# --- the teacher cache ----------------------------------------------------------------------------


def fit_counting_teacher_calls(
    root: Path, run_dir: Path, teacher: dict, epochs: int, inputs: list | None = None
) -> tuple[AttributeTask, int]:
    """Distill a tiny student for ``epochs``; returns it and how many batches its teacher's network saw.
    ``inputs`` collects, per training step, the student's images and what its teacher saw."""
    datamodule = CelebADataModule(root=str(root), image_size=32, batch_size=2, num_workers=0, include_unlabeled=True)
    student = attribute_module(teacher=teacher)
    calls = []
    student.teacher.network.register_forward_hook(lambda *_: calls.append(1))
    if inputs is not None:

        def record(images: torch.Tensor, new_step: bool) -> None:
            if student.training:
                inputs.append([images]) if new_step else inputs[-1].append(images)

        student.backbone.register_forward_pre_hook(lambda _, args: record(args[0], new_step=True))
        student.teacher.network.register_forward_pre_hook(lambda _, args: record(args[0], new_step=False))
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=run_dir,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(student, datamodule=datamodule)
    return student, len(calls)


def test_the_teacher_sees_each_training_batch_as_the_student_does_and_its_validation_outputs_are_cached(
    tmp_path: Path,
) -> None:
    root = write_celeba(tmp_path / "celeba")
    checkpoint = save_teacher_checkpoint(tmp_path / "teacher.ckpt", attribute_module().eval())
    cached = {"checkpoint": str(checkpoint), "input_size": 32, "cache_dir": str(tmp_path / "cache")}
    train_batches, val_batches = math.ceil(4 / 2), 1  # a, b, c and the unlabeled u; v

    inputs = []
    one_epoch, calls = fit_counting_teacher_calls(root, tmp_path / "one", cached, epochs=1, inputs=inputs)
    assert calls == train_batches + val_batches  # every training batch, and one pass over the validation view
    # the distillation target of an augmented view is the teacher's output on exactly that view
    assert len(inputs) == train_batches and all(torch.equal(student, teacher) for student, teacher in inputs)
    _, calls = fit_counting_teacher_calls(root, tmp_path / "three", cached, epochs=3)
    assert calls == 3 * train_batches  # the validation cache of the first run serves every epoch of the second
    assert [p.name.split("_")[1] for p in (tmp_path / "cache").iterdir()] == ["val"]
    _, calls = fit_counting_teacher_calls(root, tmp_path / "online", {**cached, "cache": False}, epochs=3)
    assert calls == 3 * (train_batches + val_batches)  # without the cache: every batch, every epoch

    # the cache holds the teacher's outputs for the validation-transformed images, in index order
    datamodule = CelebADataModule(root=str(root), image_size=32, num_workers=0, include_unlabeled=True)
    images = torch.stack([item["image"] for item in datamodule.unaugmented_dataloader("val", 32).dataset])
    expected = one_epoch.teacher(one_epoch.prepare_images(images), one_epoch.normalize)
    torch.testing.assert_close(one_epoch.teacher_outputs["val"], expected)
    table = (tmp_path / "three" / "attribute_ap.csv").read_text().splitlines()
    assert table[0] == "epoch,attribute,ap,positive_rate,teacher_ap" and len(table) == 1 + 3 * len(NAMES)


def test_predictions_give_every_attribute_by_name_and_the_present_ones(tmp_path: Path) -> None:
    adapter = AttributesAdapter()
    head = Head("attributes", 3, labels=["Smiling", "Bald", "Young"])
    card = ModelCard("task", "task", 0.25, 64, 1.0, [head], head.name, adapter.output_names([head]), "sigmoid")
    outputs = {"logits": np.zeros((2, 3)), "probabilities": np.array([[0.9, 0.1, 0.5], [0.2, 0.7, 0.4]])}
    records = adapter.describe(card, outputs, ["a.jpg", "b.jpg"], OmegaConf.create({"top_k": 5}))
    assert [record["present"] for record in records] == [["Smiling", "Young"], ["Bald"]]
    adapter.write_predictions(tmp_path, card, records)
    rows = list(csv.reader((tmp_path / "predictions.csv").read_text().splitlines()))
    assert rows[0] == ["image", "Smiling", "Bald", "Young"]
    assert [float(value) for value in rows[2][1:]] == [0.2, 0.7, 0.4]
