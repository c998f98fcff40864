"""Object detection (COCO): SSD or Faster-RCNN on the shared MobileNetV1, evaluated with COCOeval."""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from PIL import Image
from pycocotools.cocoeval import COCOeval
from torch import nn

from mnet_tasks.analysis import Picture, captioned, log_picture, ranked_bars, save_analysis, tile, writes_analysis
from mnet_tasks.config import ConfigError
from mnet_tasks.data.bad_files import BadFile
from mnet_tasks.distributed import gather_objects
from mnet_tasks.task_module import TaskModule, build_backbone
from mnet_tasks.tasks.detection.adapter import DetectionAdapter
from mnet_tasks.tasks.detection.coco_eval import (
    CategoryMap,
    coco_stats,
    evaluate_boxes,
    missed_ground_truth,
    per_category_ap,
    precision_recall,
    to_coco_results,
    to_input_box,
)
from mnet_tasks.tasks.detection.draw import MIN_SCORE, draw_detections, draw_miss, pr_curves_figure
from mnet_tasks.tasks.detection.faster_rcnn import build_faster_rcnn
from mnet_tasks.tasks.detection.ssd import SSD_FEATURE_INDICES, build_ssd

# Each detector's builder and the MobileNetV1 it needs.
DETECTORS = {
    "ssd": (build_ssd, {"num_classes": 0, "features_only": True, "out_indices": SSD_FEATURE_INDICES}),
    "faster_rcnn": (build_faster_rcnn, {"num_classes": 0}),
}
# The builders' arguments that come from the task, not from task.detector.
SET_BY_THE_TASK = {"body", "num_classes", "image_size", "normalize"}
# Logged on the progress bar; every COCOeval number is logged as val/<name>.
PROGRESS_BAR_METRICS = ("map", "map_50")
LARGEST_MISSES = 8  # missed ground-truth boxes drawn by the error analysis


def detector_options(detector: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``task.detector``'s name and builder options, checked against the builder's arguments (names the key)."""
    options = dict(detector)
    kind = options.pop("name", None)
    if kind not in DETECTORS:
        raise ConfigError(f"task.detector.name must be one of {sorted(DETECTORS)}, got {kind!r}")
    accepted = set(inspect.signature(DETECTORS[kind][0]).parameters) - SET_BY_THE_TASK
    if unknown := sorted(options.keys() - accepted):
        raise ConfigError(f"task.detector.{unknown[0]} is not an option of {kind}; choose from {sorted(accepted)}")
    return kind, options


class DetectionTask(TaskModule):
    """A torchvision detector over the backbone; logs ``train/loss`` (and its parts) and COCOeval's ``val/*``.

    Args:
        num_classes: object classes (background excluded), from the data.
        detector: ``name`` (``ssd`` or ``faster_rcnn``) and the builder's keyword arguments.
        image_size: the model's input size (SSD: the square side; Faster-RCNN: the shorter side).
        category_ids / category_names: the dataset's categories in label order (labels 1..K), from the data.
        pictures: how many validation images to draw with their detections each epoch.
        finetune: ``task.finetune``, acting on the detector's MobileNetV1 (e.g. ``freeze_bn``, the TF API's frozen
            BatchNorm for Faster-RCNN).

    With ``task.error_analysis``, each validation also writes, from COCOeval's own arrays, the AP of every
    category (``analysis/per_category_ap.{png,csv}``), their precision-recall curves (``pr_curves.png``) and the
    largest ground-truth boxes no detection found (``largest_misses.png``).
    """

    adapter = DetectionAdapter()

    def __init__(
        self,
        num_classes: int,
        backbone: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        lr_schedule: Mapping[str, Any],
        detector: Mapping[str, Any],
        image_size: int,
        category_ids: Sequence[int] | None = None,
        category_names: Sequence[str] | None = None,
        pictures: int = 8,
        weight_decay: float = 4e-5,
        monitor: str = "val/map",
        monitor_mode: str = "max",
        name: str = "detection",
        native_resolution: int = 300,
        finetune: Mapping[str, Any] | None = None,
        normalize: Mapping[str, Sequence[float]] | None = None,
    ):
        super().__init__(
            backbone,
            optimizer,
            lr_schedule,
            weight_decay,
            monitor,
            monitor_mode,
            name,
            native_resolution,
            finetune,
            normalize,
        )
        kind, options = detector_options(detector)
        build, backbone_overrides = DETECTORS[kind]
        body = build_backbone(backbone, **backbone_overrides)
        self.detector = build(body, num_classes, image_size, normalize=self.normalize, **options)
        # The MobileNetV1's modules, which task.finetune acts on (the detector holds them in its own parts).
        self.backbone_modules = [module for module in body.modules() if module is not body.classifier]
        self.categories = CategoryMap(category_ids if category_ids is not None else range(1, num_classes + 1))
        if len(self.categories) != num_classes:
            raise ValueError(f"{len(self.categories)} category ids for {num_classes} classes")
        self.category_names = list(category_names or map(str, self.categories.category_ids))
        self.pictures = pictures
        self._results: list[dict] = []
        self._image_ids: list[int] = []
        self._examples: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """The detector's name and options. (No input of MobileNetV1's minimum 32 px is too small: SSD's extra
        layers pad their 3x3 stride-2 convolutions, so their maps stop at 1x1 instead of vanishing, as in the TF
        Object Detection API, whose MobileNetV1 SSD asks for 33 px.)"""
        detector_options(cfg.task.detector)

    def backbone_body(self) -> list[nn.Module]:
        return self.backbone_modules

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images to ``[0, 1]`` floats: the detector normalises and batches them itself."""
        return images.to(torch.float32).div_(255.0)

    def forward(self, images: list[torch.Tensor] | torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Detections per image (eval mode): ``boxes`` xyxy in input pixels, ``labels`` 1..K, ``scores``."""
        return self.detector(images)

    @contextlib.contextmanager
    def cost_mode(self) -> Iterator[None]:
        """Count the cost as the paper does: Faster-RCNN's second stage always sees its full proposal count
        (without the RPN's NMS, whose output size depends on the image)."""
        rpn: nn.Module | None = getattr(self.detector, "rpn", None)
        if rpn is None:
            yield
            return
        saved, rpn.nms_thresh = rpn.nms_thresh, 1.0
        try:
            yield
        finally:
            rpn.nms_thresh = saved

    def training_step(self, batch: tuple[list[torch.Tensor], list[dict]], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.detector(images, targets)
        loss = sum(losses.values())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=len(images))
        return loss

    def validation_step(self, batch: tuple[list[torch.Tensor], list[dict]], batch_idx: int) -> None:
        keep = self.distinct_items(batch_idx, len(batch[0]))  # not DDP's padding repeats
        images, targets = batch[0][:keep], batch[1][:keep]
        if not images:
            return
        for image, target, detections in zip(images, targets, self.detector(images), strict=True):
            height, width = target["orig_size"].tolist()
            scale = (width / image.shape[-1], height / image.shape[-2])
            image_id = int(target["image_id"])
            self._results.extend(to_coco_results(detections, image_id, self.categories, scale))
            self._image_ids.append(image_id)
            if len(self._examples) < self.pictures:
                self._examples.append((image.cpu(), {k: v.cpu() for k, v in detections.items()}))

    def on_validation_epoch_end(self) -> None:
        # Every rank's detections, each validation image once (validation_step left out DDP's padding repeats).
        image_ids = [i for part in gather_objects(self._image_ids) for i in part]
        if len(set(image_ids)) != len(image_ids):
            raise RuntimeError(f"{len(image_ids) - len(set(image_ids))} validation images were evaluated twice")
        results = [r for part in gather_objects(self._results) for r in part]
        ground_truth = self.trainer.val_dataloaders.dataset.coco
        evaluator = evaluate_boxes(ground_truth, results, set(image_ids))
        stats = coco_stats(evaluator)
        for name, value in stats.items():
            self.log(f"val/{name}", value, prog_bar=name in PROGRESS_BAR_METRICS)
        self.log("val/images", float(len(image_ids)))  # evaluated, over all processes
        if not self.trainer.sanity_checking and self.trainer.is_global_zero:
            self._save_outputs(results)
        if writes_analysis(self):
            self._save_analysis(evaluator, stats["map"], results)
        self._results, self._image_ids, self._examples = [], [], []

    def _save_outputs(self, results: list[dict]) -> None:
        """The epoch's detections in COCO results format, and a sheet of drawn examples (PNG, TensorBoard)."""
        run_dir = Path(self.trainer.default_root_dir)
        (run_dir / "detections_val.json").write_text(json.dumps(results))
        if not self._examples:
            return
        sheet = tile([draw_detections(image, dets, self.category_names) for image, dets in self._examples])
        pictures = run_dir / "pictures"
        pictures.mkdir(parents=True, exist_ok=True)
        sheet.save(pictures / f"detections_epoch{self.current_epoch:03d}.png")
        log_picture(self, "val/detections", sheet)

    def _save_analysis(self, evaluator: COCOeval, mean_ap: float, results: list[dict]) -> None:
        """The AP of every category, their precision-recall curves and the largest misses, into ``analysis/``."""
        rows = per_category_ap(evaluator)
        scored = [row for row in rows if row["gt_boxes"]]
        epoch = f"{self.hparams.name}, epoch {self.current_epoch}"
        pictures: dict[str, Picture] = {
            "per_category_ap": ranked_bars(
                {row["category"]: row["ap"] for row in scored},
                xlabel="AP@[.5:.95]",
                title=f"{epoch}: AP per category (area all, 100 detections per image)",
                mean=mean_ap,
                markers={"AP50": {row["category"]: row["ap50"] for row in scored}},
            ),
            "pr_curves": pr_curves_figure(
                {iou: precision_recall(evaluator, iou) for iou in (0.5, 0.75)}, f"{epoch}: precision-recall"
            ),
        }
        if (misses := self._largest_misses(evaluator, results)) is not None:
            pictures["largest_misses"] = misses
        save_analysis(self, pictures, {"per_category_ap": rows})

    def _largest_misses(self, evaluator: COCOeval, results: list[dict]) -> Image.Image | None:
        """The largest ground-truth boxes no detection matched at IoU 0.5, each on its image as the network saw
        it (reloaded from the validation set), over that image's detections."""
        missed = missed_ground_truth(evaluator)[:LARGEST_MISSES]
        dataset = self.trainer.val_dataloaders.dataset
        index = {record.image_id: i for i, record in enumerate(dataset.records)}
        wanted = {annotation["image_id"] for annotation in missed}
        found: dict[int, list[dict]] = {image_id: [] for image_id in wanted}
        for result in results:
            if result["image_id"] in wanted and result["score"] >= MIN_SCORE:
                found[result["image_id"]].append(result)
        pictures = []
        for annotation in missed:
            sample = dataset[index[annotation["image_id"]]]
            if isinstance(sample, BadFile):  # unreadable since it was evaluated
                continue
            image, target = sample
            height, width = target["orig_size"].tolist()
            scale = (image.shape[-1] / width, image.shape[-2] / height)
            detections = [
                (to_input_box(r["bbox"], scale), self.categories.to_label(r["category_id"]))
                for r in found[annotation["image_id"]]
            ]
            drawing = draw_miss(image, to_input_box(annotation["bbox"], scale), detections)
            name = self.category_names[self.categories.to_label(annotation["category_id"]) - 1]
            width_px, height_px = annotation["bbox"][2:]
            caption = f"missed {name}, {width_px:.0f}×{height_px:.0f} px (image {annotation['image_id']})"
            pictures.append(captioned(drawing, caption))
        return tile(pictures) if pictures else None
