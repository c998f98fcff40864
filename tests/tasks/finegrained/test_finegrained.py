"""Fine-grained recognition: Stanford Dogs split lists, the synthetic breeds, fine-tuning options and transfer."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import scipy.io
import timm
import torch
from conftest import QUICK
from hydra.utils import instantiate
from PIL import Image

from mnet_tasks.config import compose_config
from mnet_tasks.cost import profile_model
from mnet_tasks.data.synthetic import MARKER_NAME
from mnet_tasks.run import run
from mnet_tasks.task_module import FinetuneOptions, build_task
from mnet_tasks.tasks.finegrained import synthetic as finegrained
from mnet_tasks.tasks.finegrained.data import SplitListDataModule, read_split_list

# The synthetic breeds, small: six breeds (ears x saddle), 64 px.
BREEDS_SMALL = {"num_classes": 6, "train_per_class": 5, "test_per_class": 3, "image_size": 64}
QUICK_FINEGRAINED = [
    "task=finegrained",
    "backbone.alpha=0.25",
    "backbone.resolution=64",
    *[f"data.synthetic.{key}={value}" for key, value in BREEDS_SMALL.items()],
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
]


def cell(strings: list[str]) -> np.ndarray:
    """An N x 1 MATLAB cell of strings, as in Stanford Dogs' lists."""
    array = np.empty((len(strings), 1), dtype=object)
    array[:, 0] = strings
    return array


def save_stanford_list(path: Path, files: list[str], labels: list[int]) -> None:
    """A list in the real files' structure: file_list and annotation_list cells, labels N x 1 (1-based)."""
    scipy.io.savemat(
        path,
        {
            "file_list": cell(files),
            "annotation_list": cell([f.removesuffix(".jpg") for f in files]),
            "labels": np.array(labels, dtype=np.uint8).reshape(-1, 1),
        },
    )


def voc_xml(box: tuple[int, int, int, int]) -> str:
    xmin, ymin, xmax, ymax = box
    return (
        "<annotation><size><width>40</width><height>30</height><depth>3</depth></size><object><name>dog</name>"
        f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>"
        "</object></annotation>"
    )


@pytest.fixture
def dogs_root(tmp_path: Path) -> Path:
    """A tiny Stanford Dogs: 3 breeds, lists with 1-based labels, one annotation per image."""
    root = tmp_path / "stanford_dogs"
    files = {
        "n02085620-Chihuahua": ["n02085620_1.jpg", "n02085620_2.jpg", "n02085620_3.jpg"],
        "n02085782-Japanese_spaniel": ["n02085782_1.jpg", "n02085782_2.jpg"],
        "n02089078-black-and-tan_coonhound": ["n02089078_1.jpg", "n02089078_2.jpg"],
    }
    for label, (folder, names) in enumerate(files.items()):
        (root / "Images" / folder).mkdir(parents=True)
        (root / "Annotation" / folder).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (40, 30), (40 * label, 100, 30)).save(root / "Images" / folder / name)
            (root / "Annotation" / folder / name.removesuffix(".jpg")).write_text(voc_xml((5, 3, 24, 20)))
    train = [(f"{folder}/{names[0]}", label + 1) for label, (folder, names) in enumerate(files.items())]
    train.append(("n02085620-Chihuahua/n02085620_2.jpg", 1))
    test = [(f"{folder}/{names[-1]}", label + 1) for label, (folder, names) in enumerate(files.items())]
    for name, entries in (("train_list.mat", train), ("test_list.mat", test)):
        save_stanford_list(root / name, [f for f, _ in entries], [label for _, label in entries])
    return root


# --- split lists ----------------------------------------------------------------------------------


def test_mat_list_gives_paths_and_zero_based_labels(tmp_path: Path) -> None:
    path = tmp_path / "train_list.mat"
    save_stanford_list(
        path, ["n02085620-Chihuahua/n02085620_5927.jpg", "n02116738-African_hunting_dog/x.jpg"], [1, 120]
    )
    entries = read_split_list(path)
    assert [(e.number, e.path, e.label) for e in entries] == [
        (1, "n02085620-Chihuahua/n02085620_5927.jpg", 0),
        (2, "n02116738-African_hunting_dog/x.jpg", 119),
    ]


def test_a_zero_based_mat_list_is_refused_naming_the_entry_its_file_and_label(tmp_path: Path) -> None:
    path = tmp_path / "train_list.mat"
    files = [f"n02085620-Chihuahua/n02085620_{i}.jpg" for i in range(6)] + ["n02085782-Japanese_spaniel/x.jpg"]
    save_stanford_list(path, files, [1, 1, 1, 1, 1, 2, 0])  # the first five labels are valid
    with pytest.raises(ValueError) as error:
        read_split_list(path)
    assert str(error.value) == (
        f"split list {path}: labels must be whole numbers from 1 (Stanford Dogs' lists are 1-based): "
        "train_list.mat entry 7 'n02085782-Japanese_spaniel/x.jpg' (label 0)"
    )


def test_text_list_takes_whole_lines_and_skips_comments(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text(
        "# CUB-200-2011 train split\n001.Black_footed_Albatross/a.jpg\n\nAM General Hummer SUV 2000\\b.jpg  \n"
    )
    entries = read_split_list(path)
    assert [(e.number, e.path, e.label) for e in entries] == [
        (2, "001.Black_footed_Albatross/a.jpg", None),
        (4, "AM General Hummer SUV 2000/b.jpg", None),
    ]


def test_a_text_list_with_a_utf8_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("001.Black_footed_Albatross/a.jpg\n", encoding="utf-8-sig")
    assert [e.path for e in read_split_list(path)] == ["001.Black_footed_Albatross/a.jpg"]


def test_unreadable_mat_list_is_named(tmp_path: Path) -> None:
    path = tmp_path / "train_list.mat"
    path.write_text("not a mat file")
    with pytest.raises(ValueError, match=r"train_list\.mat"):
        read_split_list(path)
    scipy.io.savemat(path, {"files": cell(["a/b.jpg"])})
    with pytest.raises(ValueError, match=r"no 'file_list'.*\['files'\]"):
        read_split_list(path)


def test_stanford_dogs_layout_class_count_from_the_folders(dogs_root: Path) -> None:
    data = SplitListDataModule(root=str(dogs_root), image_size=32, batch_size=8, num_workers=0)
    data.prepare_data()
    assert data.class_names == [
        "n02085620-Chihuahua",
        "n02085782-Japanese_spaniel",
        "n02089078-black-and-tan_coonhound",
    ]
    assert data.head_kwargs() == {"num_classes": 3}
    assert data.dataset_name == "stanford_dogs"
    data.setup("fit")
    assert len(data.train_set) == 4 and len(data.val_set) == 3
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 32, 32)
    assert sorted(labels.tolist()) == [0, 0, 1, 2]


def test_text_lists_serve_other_fine_grained_sets(dogs_root: Path) -> None:
    (dogs_root / "train.txt").write_text(
        "n02085620-Chihuahua/n02085620_1.jpg\nn02085782-Japanese_spaniel/n02085782_1.jpg\n"
    )
    (dogs_root / "test.txt").write_text("n02089078-black-and-tan_coonhound/n02089078_2.jpg\n")
    data = SplitListDataModule(
        root=str(dogs_root), image_size=32, num_workers=0, train_list="train.txt", val_list="test.txt"
    )
    data.prepare_data()
    data.setup("fit")
    assert [label for _, label in data.train_set.samples] == [0, 1]
    assert [label for _, label in data.val_set.samples] == [2]


@pytest.mark.parametrize(("key", "file"), [("data.train_list", "train_list.mat"), ("data.val_list", "test_list.mat")])
def test_missing_split_list_names_the_file_and_keys(dogs_root: Path, key: str, file: str) -> None:
    (dogs_root / file).unlink()
    with pytest.raises(FileNotFoundError) as error:
        SplitListDataModule(root=str(dogs_root)).prepare_data()
    message = str(error.value)
    assert str(dogs_root / file) in message and key in message and "data.root" in message


def test_missing_images_are_counted_and_reported_at_setup(dogs_root: Path, caplog) -> None:
    (dogs_root / "Images" / "n02085782-Japanese_spaniel" / "n02085782_1.jpg").unlink()
    data = SplitListDataModule(root=str(dogs_root), image_size=32, num_workers=0)
    data.prepare_data()
    with caplog.at_level(logging.WARNING):
        data.setup("fit")
    assert len(data.train_set) == 3
    assert [(entry.number, reason) for entry, reason in data.train_set.skipped] == [(2, "missing file")]
    assert "1 of 4 entries skipped" in caplog.text
    assert "train_list.mat entry 2 'n02085782-Japanese_spaniel/n02085782_1.jpg' (missing file)" in caplog.text


def test_files_in_no_split_list_are_named_not_used(dogs_root: Path) -> None:
    spaniels = dogs_root / "Images" / "n02085782-Japanese_spaniel"
    Image.new("RGB", (40, 30)).save(spaniels / "n02085782_9.jpg")
    Image.new("RGB", (40, 30)).save(
        spaniels / "animated.gif", save_all=True, append_images=[Image.new("RGB", (40, 30))]
    )
    data = SplitListDataModule(root=str(dogs_root), image_size=32, num_workers=0)
    data.prepare_data()
    data.setup("fit")
    assert len(data.train_set) == 4 and len(data.val_set) == 3  # what the lists name, nothing more
    notes = {Path(path).name: reason for (_, path), reason in data.skipped_files.notes.items()}
    reason = "in neither train_list.mat nor test_list.mat, not used"
    assert notes == {"n02085782_9.jpg": reason, "animated.gif": reason}
    assert data.data_report()["train"]["file in no split list, not used"] == 2


def test_labels_that_disagree_with_the_folders_are_an_error(dogs_root: Path) -> None:
    save_stanford_list(dogs_root / "test_list.mat", ["n02085620-Chihuahua/n02085620_3.jpg"], [2])
    data = SplitListDataModule(root=str(dogs_root), image_size=32, num_workers=0)
    with pytest.raises(ValueError, match=r"test_list\.mat entry 1 .*labelled n02085782-Japanese_spaniel"):
        data.setup("validate")


def test_crop_to_box_crops_to_the_annotation(dogs_root: Path, caplog) -> None:
    (dogs_root / "Annotation" / "n02085620-Chihuahua" / "n02085620_2").unlink()
    data = SplitListDataModule(root=str(dogs_root), image_size=32, num_workers=0, crop_to_box=True)
    data.prepare_data()
    with caplog.at_level(logging.WARNING):
        data.setup("fit")
    shapes = [data.train_set.load_image(i).shape for i in range(len(data.train_set))]
    # VOC box (5, 3)-(24, 20), 1-based and inclusive: 20 x 18 pixels; the image without annotation stays whole
    assert shapes == [(18, 20, 3), (18, 20, 3), (18, 20, 3), (30, 40, 3)]
    assert "1 of 4 images keep their whole frame" in caplog.text and "n02085620_2" in caplog.text
    data.train_set.decode_side = 10  # would decode these JPEGs at half size: boxed images stay at full size
    reduced = [data.train_set.load_image(i).shape for i in range(len(data.train_set))]
    assert reduced == [(18, 20, 3), (18, 20, 3), (18, 20, 3), (15, 20, 3)]
    # kept in memory: each crop's own pixels, which data.cache_mb counts, not a view holding its whole photo
    assert data.train_set.keep_decoded(1, "train")
    assert all(
        image.base is None and image.nbytes == np.prod(shape)
        for image, shape in zip(data.train_set.decoded, reduced, strict=True)
    )


# --- synthetic breeds -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def breeds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    return finegrained.BREED_IMAGES.generate(
        cache / finegrained.BREED_IMAGES.folder_name(**BREEDS_SMALL), **BREEDS_SMALL
    )


def test_synthetic_breeds_are_written_in_the_stanford_dogs_files(breeds_root: Path) -> None:
    folders = sorted(p.name for p in (breeds_root / "Images").iterdir())
    assert folders == [finegrained.breed_folder(i) for i in range(6)]
    assert folders[0] == "n90000001-pointed_ears_plain_tail_solid"
    raw = scipy.io.loadmat(breeds_root / "train_list.mat")
    assert raw["file_list"].shape == raw["annotation_list"].shape == raw["labels"].shape == (30, 1)
    for split, per_class in (("train", 5), ("test", 3)):
        entries = read_split_list(breeds_root / f"{split}_list.mat")
        assert [e.label for e in entries] == [label for label in range(6) for _ in range(per_class)]
        assert all((breeds_root / "Images" / e.path).is_file() for e in entries)
    assert len(read_split_list(breeds_root / "file_list.mat")) == 6 * 8
    first = read_split_list(breeds_root / "train_list.mat")[0].path
    with Image.open(breeds_root / "Images" / first) as image:
        assert (image.format, image.size) == ("JPEG", (64, 64))
    box = ET.parse(breeds_root / "Annotation" / first.removesuffix(".jpg")).getroot().find("object/bndbox")
    xmin, ymin, xmax, ymax = (int(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    assert 1 <= xmin < xmax <= 64 and 1 <= ymin < ymax <= 64 and (xmax - xmin) > 20  # the animal, not the frame
    assert json.loads((breeds_root / MARKER_NAME).read_text())["num_classes"] == 6


def test_synthetic_breeds_are_deterministic(tmp_path: Path, breeds_root: Path) -> None:
    again = finegrained.BREED_IMAGES.generate(tmp_path / "again", **BREEDS_SMALL)
    image = "Images/n90000003-floppy_ears_plain_tail_solid/n90000003_00006.jpg"
    assert (again / image).read_bytes() == (breeds_root / image).read_bytes()
    assert read_split_list(again / "test_list.mat") == read_split_list(breeds_root / "test_list.mat")
    other = finegrained.BREED_IMAGES.folder_name(**{**BREEDS_SMALL, "seed": 1})
    assert other != finegrained.BREED_IMAGES.folder_name(**BREEDS_SMALL)


def test_breeds_differ_only_in_their_details() -> None:
    """Same random draw, two breeds: the pixels differ only in a small part of the animal."""
    images = {}
    for breed in (0, 3):  # pointed ears, plain tail; solid vs saddled coat
        image, box = finegrained.render_animal_image(np.random.default_rng(7), finegrained.BREEDS[breed], 96)
        images[breed] = np.asarray(image, dtype=int)
    differs = (np.abs(images[0] - images[3]).sum(axis=2) > 30).mean()
    box_area = (box[2] - box[0]) * (box[3] - box[1]) / 96**2
    assert 0.005 < differs < 0.25 * box_area


def test_too_many_breeds_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.synthetic\.num_classes must be 2 to 12, got 13"):
        finegrained.BREED_IMAGES.generate(tmp_path / "data", num_classes=13)
    assert not (tmp_path / "data").exists()


# --- fine-tuning options --------------------------------------------------------------------------


class FakeTrainer:
    estimated_stepping_batches = 40
    max_epochs = 4


def finegrained_task(*overrides: str, num_classes: int = 6):
    return build_task(compose_config(["task=finegrained", "backbone.alpha=0.25", *overrides]), num_classes=num_classes)


def test_four_parameter_groups_keep_their_lr_ratio_through_the_schedule() -> None:
    module = finegrained_task("task.finetune.backbone_lr_scale=0.1", "task.lr_schedule.warmup_epochs=1")
    module.trainer = FakeTrainer()  # type: ignore[assignment]
    setup = module.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert sorted(groups) == ["backbone_decay", "backbone_no_decay", "head_decay", "head_no_decay"]
    head = {id(module.backbone.classifier.weight), id(module.backbone.classifier.bias)}
    assert {id(p) for g in ("head_decay", "head_no_decay") for p in groups[g]["params"]} == head
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(module.parameters()))
    assert [groups[g]["weight_decay"] for g in sorted(groups)] == [4e-5, 0.0, 4e-5, 0.0]
    for _ in range(25):
        optimizer.step()
        scheduler.step()
        lrs = {name: g["lr"] for name, g in groups.items()}
        assert lrs["backbone_decay"] == pytest.approx(0.1 * lrs["head_decay"])
        assert lrs["backbone_no_decay"] == pytest.approx(0.1 * lrs["head_no_decay"])
    assert lrs["head_decay"] < 0.045 * 0.9  # the cosine has moved every group's own base lr


def test_finetune_options_are_checked_by_key() -> None:
    with pytest.raises(ValueError, match=r"task\.finetune\.freeze_backbone is not an option"):
        FinetuneOptions.from_config({"freeze_backbone": 2})
    with pytest.raises(ValueError, match=r"task\.finetune\.backbone_lr_scale"):
        FinetuneOptions.from_config({"backbone_lr_scale": -1})
    assert not FinetuneOptions.from_config({"backbone_lr_scale": 1, "freeze_bn": False}).active


def test_frozen_backbone_trains_only_the_head_then_everything(tmp_path: Path, data_dir: Path) -> None:
    """freeze_backbone_epochs=1: after epoch 0 only the classifier has moved, after epoch 1 the backbone too;
    freeze_bn keeps every BatchNorm layer of the backbone (statistics, scale and shift) as it was throughout."""
    cfg = compose_config([*QUICK_FINEGRAINED, "task.finetune.freeze_backbone_epochs=1", "task.finetune.freeze_bn=true"])
    data = instantiate(cfg.data, cache_dir=str(data_dir))
    data.prepare_data()
    module = build_task(cfg, **data.head_kwargs())
    start = {k: v.clone() for k, v in module.state_dict().items()}
    snapshots = []

    class Snapshot(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            snapshots.append({k: v.clone() for k, v in pl_module.state_dict().items()})

    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[Snapshot()],
        default_root_dir=tmp_path,  # the error analysis of each validation goes into the run folder
    )
    trainer.fit(module, datamodule=data)

    def moved(state: dict[str, torch.Tensor], part: str) -> bool:
        return any(not torch.equal(state[k], start[k]) for k in state if part in k and "num_batches" not in k)

    after_frozen_epoch, after_free_epoch = snapshots
    assert moved(after_frozen_epoch, "classifier")
    assert not moved(after_frozen_epoch, "blocks.") and not moved(after_frozen_epoch, "stem.")
    assert moved(after_free_epoch, ".conv.weight")
    assert not moved(after_free_epoch, ".bn.")
    # the optimizer built at the start holds the backbone, so it trains once released
    held = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert id(module.backbone.blocks[3].pw.conv.weight) in held
    assert id(module.backbone.blocks[3].pw.bn.weight) not in held  # freeze_bn: never trained


@pytest.mark.parametrize(
    ("alpha", "rho", "madds", "params"),
    [(1.0, 1.0, 569, 3.3), (0.75, 1.0, 325, 1.9), (1.0, 0.857, 418, 3.3), (0.75, 0.857, 239, 1.9)],
)
def test_cost_matches_the_papers_table_10(alpha: float, rho: float, madds: float, params: float) -> None:
    cfg = compose_config(["task=finegrained", f"backbone.alpha={alpha}", f"backbone.rho={rho}"])
    cost = profile_model(build_task(cfg, num_classes=120), cfg.input_size)  # Stanford Dogs' 120 breeds
    assert cost.madds / 1e6 == pytest.approx(madds, rel=0.01)
    assert cost.params / 1e6 == pytest.approx(params, abs=0.05)


# --- the transfer path ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classification_checkpoint(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A checkpoint of this project's classification task, trained briefly on its synthetic shapes."""
    out = tmp_path_factory.mktemp("classification")
    cfg = compose_config(
        [
            *QUICK,
            "trainer.max_epochs=1",
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={out}",
        ]
    )
    run(cfg)
    return out / "checkpoints" / "last.ckpt"


def test_classification_checkpoint_loads_into_a_finegrained_model(classification_checkpoint: Path) -> None:
    saved = torch.load(classification_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    module = finegrained_task(f"backbone.pretrained={classification_checkpoint}", num_classes=6)
    own = module.state_dict()
    body = [k for k in saved if k.startswith("backbone.") and "classifier" not in k]
    assert len(body) > 100 and all(torch.equal(own[k], saved[k]) for k in body)
    assert saved["backbone.classifier.weight"].shape == (4, 256)
    assert own["backbone.classifier.weight"].shape == (6, 256)  # a fresh head for the six breeds
    assert own["backbone.classifier.weight"].std() == pytest.approx(0.01, rel=0.3)


def test_incompatible_pretrained_files_are_named(tmp_path: Path, classification_checkpoint: Path) -> None:
    # (hydra's instantiate wraps the ValueError, keeping its message)
    with pytest.raises(Exception, match=r"backbone\.pretrained=.*last\.ckpt.*different alpha"):
        finegrained_task("backbone.alpha=0.5", f"backbone.pretrained={classification_checkpoint}")
    garbage = tmp_path / "notes.pth"
    garbage.write_text("not weights")
    with pytest.raises(Exception, match=r"backbone\.pretrained=.*notes\.pth"):
        finegrained_task(f"backbone.pretrained={garbage}")


def test_stanford_dogs_experiment_names_timm_weights_and_requires_data_root(tmp_path: Path) -> None:
    overrides = ["experiment=finegrained_dogs", "trainer=cpu", f"paths.data_dir={tmp_path}/data"]
    cfg = compose_config(overrides)
    assert (cfg.task.name, cfg.backbone.alpha, cfg.input_size) == ("finegrained", 1.0, 224)
    assert cfg.data._target_.endswith("SplitListDataModule") and cfg.task.finetune.backbone_lr_scale == 0.1
    assert cfg.backbone.pretrained.removeprefix("timm:") in timm.list_pretrained("mobilenetv1_100*")
    with pytest.raises(Exception, match=r"data\.root is required"):
        run(compose_config([*overrides, f"paths.output_dir={tmp_path}/run"]))
    assert not (tmp_path / "data").exists()


# --- transfer: the acceptance test --------------------------------------------------------

FINETUNE_BUDGET = [
    "task=finegrained",
    "backbone.alpha=0.25",
    "backbone.resolution=64",
    "data.synthetic.num_classes=6",
    "data.synthetic.train_per_class=80",
    "data.synthetic.test_per_class=60",  # 360 validation images: top-1 moves by ~2.5 points from sampling alone
    "data.synthetic.image_size=64",
    "data.batch_size=32",
    "data.num_workers=0",
    "trainer.max_epochs=8",
    "trainer.enable_progress_bar=false",
    "callbacks=none",
    "logger=none",
]


@pytest.mark.learning
@pytest.mark.xdist_group("shapes_run")
def test_pretrained_on_shapes_beats_scratch_on_the_breeds(
    tmp_path: Path, data_dir: Path, shapes_run, learning_seed, bars
) -> None:
    """The transfer path end to end: the classification learning test's checkpoint (8 epochs on the synthetic shapes),
    fine-tuned on the synthetic breeds, beats the same network trained from scratch with the same budget (8 epochs of
    480 images). Both runs share everything but the starting weights."""
    pretraining, checkpoint = shapes_run
    results = {}
    for start, extra in (("pretrained", [f"backbone.pretrained={checkpoint}"]), ("scratch", [])):
        overrides = [*FINETUNE_BUDGET, *extra, f"seed={learning_seed}", f"paths.data_dir={data_dir}"]
        record = run(compose_config([*overrides, f"paths.output_dir={tmp_path / start}"]))
        assert (record["task"], record["dataset"], record["status"]) == ("finegrained", "synthetic_breeds", "completed")
        results[start] = record["metrics"]
    summary = {start: {k: round(v, 3) for k, v in m["final"].items()} for start, m in results.items()}
    print(f"shapes top-1 {pretraining['metrics']['final']['val/top1']:.3f}; breeds after fine-tuning: {summary}")
    pretrained, scratch = results["pretrained"]["final"], results["scratch"]["final"]
    chance = 1 / 6
    # The loss gap is the steady signal: -0.44 to -0.79 over seeds and CPU kernel paths, and exactly 0 for a
    # transfer that loads nothing (the two runs share the seed). The top-1 gap is not (0.04 to 0.28: a weak shapes
    # run meets a lucky scratch run), so it is printed above, not asserted. The spread is in tests/README.md.
    bars.measure("pretrained - scratch val/loss", pretrained["val/loss"] - scratch["val/loss"], at_most=-0.3)
    bars.measure("pretrained val/top1", pretrained["val/top1"], at_least=1.5 * chance)
    bars.check()
