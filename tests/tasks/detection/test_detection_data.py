"""COCO data and evaluation, on real COCO val2017 annotations and on the synthetic set in the same layout."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.cocoeval import COCOeval

from mnet_tasks.tasks.detection.coco_eval import CategoryMap, coco_evaluate, load_coco, to_coco_results
from mnet_tasks.tasks.detection.data import CocoDataModule, CocoDetectionDataset, parse_coco
from mnet_tasks.tasks.detection.synthetic import CATEGORY_IDS, COCO_SHAPES
from mnet_tasks.tasks.detection.transforms import detection_transform

FIXTURE = Path(__file__).parent / "fixtures" / "coco-val2017-2img" / "instances_val2017.json"
SMALL_SYNTHETIC = {"num_classes": 3, "train_images": 24, "val_images": 8, "image_size": 96, "max_objects": 3}


def write_blank_images(annotation_file: Path, images_dir: Path) -> None:
    """COCO's annotations without its pixels: grey images of the listed sizes."""
    images_dir.mkdir(parents=True, exist_ok=True)
    for info in json.loads(annotation_file.read_text())["images"]:
        Image.new("RGB", (info["width"], info["height"]), (90, 90, 90)).save(images_dir / info["file_name"])


@pytest.fixture
def real_coco(tmp_path) -> tuple[Path, Path]:
    write_blank_images(FIXTURE, tmp_path / "val2017")
    return FIXTURE, tmp_path / "val2017"


@pytest.fixture(params=["real", "synthetic"])
def any_coco(request, tmp_path) -> tuple[Path, Path]:
    """The real COCO val2017 annotations (with blank images), or the synthetic val split."""
    if request.param == "real":
        return request.getfixturevalue("real_coco")
    root = COCO_SHAPES.generate(tmp_path / "synthetic", **SMALL_SYNTHETIC)
    return root / "annotations" / "instances_val2017.json", root / "val2017"


def ground_truth_detections(annotation_file: Path, images_dir: Path, shift: float = 0.0):
    """Every usable ground-truth box as a detection of score 1, optionally shifted right by ``shift`` x width."""
    coco = load_coco(annotation_file)
    categories = CategoryMap(sorted(coco.cats))
    records, _ = parse_coco(coco, categories, images_dir, annotation_file)
    per_image = {}
    for record in records:
        boxes = torch.as_tensor(record.boxes, dtype=torch.float64)
        widths = boxes[:, 2] - boxes[:, 0]
        boxes[:, [0, 2]] += shift * widths[:, None]
        per_image[record.image_id] = {
            "boxes": boxes,
            "labels": torch.as_tensor(record.labels),
            "scores": torch.ones(len(record.labels)),
        }
    return coco, categories, per_image


def test_category_map_round_trips_coco_sparse_ids():
    coco = load_coco(FIXTURE)
    ids = sorted(coco.cats)
    assert len(ids) == 80 and ids[-1] == 90 and ids != list(range(1, 81))  # COCO's ids have gaps
    categories = CategoryMap(ids)
    labels = [categories.to_label(i) for i in ids]
    assert labels == list(range(1, 81))
    assert [categories.to_category_id(label) for label in labels] == ids
    with pytest.raises(ValueError, match=r"outside 1\.\.80"):
        categories.to_category_id(0)
    with pytest.raises(ValueError, match="duplicate"):
        CategoryMap([1, 2, 2])


def test_real_coco_parsing_counts_crowd_and_keeps_every_object(real_coco):
    annotation_file, images_dir = real_coco
    coco = load_coco(annotation_file)
    records, counts = parse_coco(coco, CategoryMap(sorted(coco.cats)), images_dir, annotation_file)
    assert {r.image_id for r in records} == {139, 255917}
    assert counts["crowd"] == 1
    assert sum(len(r.labels) for r in records) == len(coco.anns) - 1  # every non-crowd object kept
    for record in records:
        assert (record.boxes[:, 2:] > record.boxes[:, :2]).all()
        assert (record.boxes[:, 2] <= record.width).all() and (record.boxes[:, 3] <= record.height).all()


def as_results(categories: CategoryMap, per_image: dict) -> list[dict]:
    return [r for image_id, d in per_image.items() for r in to_coco_results(d, image_id, categories, (1.0, 1.0))]


def cocoeval_stats(coco, results: list[dict]) -> list[float]:
    """pycocotools on its own, as its README runs it."""
    evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return list(evaluator.stats)


def test_ground_truth_as_detections_gives_ap_one(any_coco):
    coco, categories, per_image = ground_truth_detections(*any_coco)
    stats = coco_evaluate(coco, as_results(categories, per_image), per_image)
    for name in ("map", "map_50", "map_75", "mar_100"):
        assert stats[name] == pytest.approx(1.0), name


def test_shifted_boxes_give_what_cocoeval_computes_independently(any_coco):
    coco, categories, per_image = ground_truth_detections(*any_coco, shift=0.2)
    results = as_results(categories, per_image)
    stats = coco_evaluate(coco, results, per_image)
    assert list(stats.values()) == pytest.approx(cocoeval_stats(coco, results))
    assert 0.3 < stats["map"] < 0.5


def test_shifted_boxes_give_the_known_ap(tmp_path):
    # Shifting every box by a fifth of its width gives IoU (1 - 0.2) / (1 + 0.2) = 2/3 with its ground truth: a
    # match at the IoU thresholds 0.50 .. 0.65 (4 of 10) and none above, so AP@[.5:.95] = 0.4. The synthetic
    # objects barely overlap, so no shifted box can match a neighbour instead (on COCO's crowded street it can).
    root = COCO_SHAPES.generate(tmp_path, **SMALL_SYNTHETIC)
    coco, categories, per_image = ground_truth_detections(
        root / "annotations" / "instances_val2017.json", root / "val2017", shift=0.2
    )
    stats = coco_evaluate(coco, as_results(categories, per_image), per_image)
    assert stats["map"] == pytest.approx(0.4)
    assert stats["map_50"] == pytest.approx(1.0)
    assert stats["map_75"] == pytest.approx(0.0)


def test_results_map_labels_back_to_dataset_ids_and_original_pixels():
    categories = CategoryMap([3, 7, 42])
    detections = {
        "boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]),
        "labels": torch.tensor([3]),
        "scores": torch.tensor([0.5]),
    }
    (result,) = to_coco_results(detections, 77, categories, scale=(2.0, 0.5))
    assert result == {"image_id": 77, "category_id": 42, "bbox": [20.0, 10.0, 40.0, 20.0], "score": 0.5}


def test_no_detection_scores_zero(real_coco):
    coco = load_coco(real_coco[0])
    assert coco_evaluate(coco, [], [139])["map"] == 0.0


def test_bad_annotations_are_clipped_or_dropped_and_counted(tmp_path):
    record = json.loads(FIXTURE.read_text())
    image = record["images"][0]  # 640x427
    width, height = image["width"], image["height"]
    base = {"image_id": image["id"], "iscrowd": 0, "area": 10.0, "segmentation": []}
    bad = [
        {"id": 1, "category_id": 1, "bbox": [10, 10, 0, 5]},  # zero width
        {"id": 2, "category_id": 1, "bbox": [10, 10, 5, -3]},  # negative height
        {"id": 3, "category_id": 1, "bbox": [width + 5, 10, 20, 20]},  # entirely outside
        {"id": 4, "category_id": 1, "bbox": [width - 10, height - 10, 30, 30]},  # partly outside: clipped
        {"id": 5, "category_id": 999, "bbox": [10, 10, 20, 20]},  # unknown category
        {"id": 6, "category_id": 1, "bbox": [10, 10, 20]},  # malformed
        {"id": 7, "category_id": 1, "bbox": [10, 10, float("nan"), 5]},  # malformed
        {"id": 8, "category_id": 1, "bbox": [50, 60, 20, 30]},  # good
    ]
    record["annotations"] = [{**base, **a} for a in bad]
    record["images"].append({"id": 5, "file_name": "empty.jpg", "width": 64, "height": 48})  # no annotations
    record["images"].append({"id": 6, "file_name": "missing.jpg", "width": 64, "height": 48})  # not on disk
    annotation_file = tmp_path / "instances_bad.json"
    annotation_file.write_text(json.dumps(record))
    write_blank_images(annotation_file, tmp_path / "images")
    (tmp_path / "images" / "missing.jpg").unlink()

    coco = load_coco(annotation_file)
    categories = CategoryMap(sorted(coco.cats))
    records, counts = parse_coco(coco, categories, tmp_path / "images", annotation_file)
    assert dict(counts) == {
        "zero_size": 2,
        "outside_image": 1,
        "clipped": 1,
        "unknown_category": 1,
        "malformed": 2,
        "missing_image": 1,
        "image_without_boxes": 2,  # image 139 (all its boxes are elsewhere) and the empty one
    }
    by_id = {r.image_id: r for r in records}
    kept = by_id[image["id"]]
    np.testing.assert_allclose(kept.boxes, [[width - 10, height - 10, width, height], [50, 60, 70, 90]])

    dataset = CocoDetectionDataset(
        coco, annotation_file, tmp_path / "images", categories, detection_transform(64, train=True, crop="ssd")
    )
    for index in range(len(dataset)):  # the image without boxes included
        image_tensor, target = dataset[index]
        assert image_tensor.shape == (3, 64, 64) and image_tensor.dtype == torch.uint8  # made [0, 1] on the device
        assert target["boxes"].shape == (len(target["labels"]), 4)


def without_image_sizes(annotation_file: Path, folder: Path) -> Path:
    """The annotation file as labeling tools export it: its images without width and height."""
    record = json.loads(annotation_file.read_text())
    for info in record["images"]:
        del info["width"], info["height"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / annotation_file.name).write_text(json.dumps(record))
    return folder / annotation_file.name


def test_image_sizes_missing_from_the_json_are_read_from_the_images(real_coco, tmp_path):
    annotation_file = without_image_sizes(real_coco[0], tmp_path / "annotations")
    record = json.loads(annotation_file.read_text())
    record["images"].append({"id": 7, "file_name": "rotated.jpg"})  # stored 64x48, shown upright as 48x64
    annotation_file.write_text(json.dumps(record))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (64, 48)).save(real_coco[1] / "rotated.jpg", exif=exif)

    coco = load_coco(annotation_file)
    dataset = CocoDetectionDataset(
        coco, annotation_file, real_coco[1], CategoryMap(sorted(coco.cats)), detection_transform(64, train=False)
    )
    assert {r.image_id: (r.width, r.height) for r in dataset.records} == {
        139: (640, 426),
        255917: (640, 427),
        7: (48, 64),
    }
    for index in range(len(dataset)):
        _, target = dataset[index]  # no BadFile: the sizes are the images' own
        assert target["orig_size"].tolist() == [dataset.records[index].height, dataset.records[index].width]


def test_an_image_without_a_size_in_the_json_or_a_readable_file_is_refused_naming_both(real_coco, tmp_path):
    annotation_file = without_image_sizes(real_coco[0], tmp_path / "annotations")
    (real_coco[1] / "000000000139.jpg").write_bytes(b"not an image")
    coco = load_coco(annotation_file)
    with pytest.raises(ValueError) as error:
        parse_coco(coco, CategoryMap(sorted(coco.cats)), real_coco[1], annotation_file)
    assert str(error.value) == (
        f"{annotation_file}: image id 139 has no width and height, and its file gives none either (cannot read "
        f"image {real_coco[1] / '000000000139.jpg'}: not an image format PIL can identify)"
    )


def test_image_of_another_size_than_its_annotation_is_named(real_coco, tmp_path):
    annotation_file, images_dir = real_coco
    Image.new("RGB", (100, 100)).save(images_dir / "000000000139.jpg")
    coco = load_coco(annotation_file)
    dataset = CocoDetectionDataset(
        coco, annotation_file, images_dir, CategoryMap(sorted(coco.cats)), detection_transform(64, train=False)
    )
    index = next(i for i, r in enumerate(dataset.records) if r.image_id == 139)
    skipped = dataset[index]  # a BadFile: the loader drops it and reports it (tests/test_bad_data.py)
    assert skipped.path.endswith("000000000139.jpg")
    assert re.match(r"100x100 but instances_.*json says 640x426", skipped.reason)


def test_synthetic_set_is_valid_coco_with_sparse_ids(tmp_path):
    root = COCO_SHAPES.generate(tmp_path / "a", **SMALL_SYNTHETIC, seed=3)
    for split in ("train2017", "val2017"):
        annotation_file = root / "annotations" / f"instances_{split}.json"
        coco = load_coco(annotation_file)
        assert sorted(coco.cats) == sorted(CATEGORY_IDS[:3])
        images = {i["id"]: i for i in coco.dataset["images"]}
        for ann in coco.dataset["annotations"]:
            x, y, w, h = ann["bbox"]
            info = images[ann["image_id"]]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= info["width"] + 1e-6 and y + h <= info["height"] + 1e-6
            assert 0 < ann["area"] <= w * h + 1
        for info in images.values():
            assert Image.open(root / split / info["file_name"]).size == (info["width"], info["height"])
    # Deterministic: the same parameters write the same annotations.
    again = COCO_SHAPES.generate(tmp_path / "b", **SMALL_SYNTHETIC, seed=3)
    for split in ("train2017", "val2017"):
        name = f"annotations/instances_{split}.json"
        assert (root / name).read_text() == (again / name).read_text()


def test_datamodule_batches_follow_the_detection_contract(tmp_path):
    data = CocoDataModule(
        cache_dir=str(tmp_path), image_size=96, batch_size=4, num_workers=0, synthetic=SMALL_SYNTHETIC
    )
    data.prepare_data()
    assert data.data_dir.name == COCO_SHAPES.folder_name(**SMALL_SYNTHETIC)
    head = data.head_kwargs()
    assert head["num_classes"] == 3 and head["category_ids"] == sorted(CATEGORY_IDS[:3])
    data.setup("fit")
    images, targets = next(iter(data.train_dataloader()))
    assert len(images) == len(targets) == 4
    for image, target in zip(images, targets, strict=True):
        assert image.shape == (3, 96, 96) and image.dtype == torch.uint8
        boxes = target["boxes"]
        assert ((boxes >= 0) & (boxes <= 96)).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        assert ((target["labels"] >= 1) & (target["labels"] <= 3)).all()
    images, targets = next(iter(data.val_dataloader()))
    info = data.val_set.coco.imgs[int(targets[0]["image_id"])]
    assert targets[0]["orig_size"].tolist() == [info["height"], info["width"]]


def test_datamodule_without_square_resize_keeps_the_original_size(tmp_path):
    data = CocoDataModule(cache_dir=str(tmp_path), square=False, num_workers=0, synthetic=SMALL_SYNTHETIC)
    data.prepare_data()
    data.setup("validate")
    image, target = data.val_set[0]
    assert list(image.shape[1:]) == target["orig_size"].tolist()


def without_annotations(root: Path, split: str) -> Path:
    """The split's annotation file without its ``annotations`` key."""
    path = root / "annotations" / f"instances_{split}.json"
    record = json.loads(path.read_text())
    del record["annotations"]
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize(
    ("split", "stage", "message"),
    [
        ("train2017", "fit", ": no usable box to train on in its 24 images (0 annotations)"),
        (
            "val2017",
            "validate",
            " has no annotations to score against (its 'annotations' list is missing or empty): validation needs the "
            "ground-truth boxes of its images",
        ),
    ],
)
def test_a_split_without_annotations_is_refused_naming_its_json(tmp_path, split, stage, message):
    """Training without a single box would learn only background; validation without them has nothing to score."""
    root = COCO_SHAPES.generate(tmp_path / "coco", **SMALL_SYNTHETIC)
    path = without_annotations(root, split)
    data = CocoDataModule(root=str(root), image_size=96, num_workers=0)
    with pytest.raises(ValueError) as error:
        data.setup(stage)
    assert str(error.value) == f"{path}{message}"


def test_missing_files_and_mismatched_categories_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"instances_train2017.json .*data.root"):
        CocoDataModule(root=str(tmp_path)).prepare_data()
    with pytest.raises(ValueError, match=r"data\.root is required"):
        CocoDataModule(root=None, synthetic=None)

    root = COCO_SHAPES.generate(tmp_path / "coco", **SMALL_SYNTHETIC)
    val_file = root / "annotations" / "instances_val2017.json"
    record = json.loads(val_file.read_text())
    record["categories"] = record["categories"][:2]
    val_file.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"category ids differ between .*instances_train2017\.json"):
        CocoDataModule(root=str(root)).head_kwargs()
