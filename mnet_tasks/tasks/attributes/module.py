"""Multi-label face attributes, trained on labels or distilled from a teacher (the paper's Table 12).

The head is the backbone's classifier with one logit per attribute. On labels the loss is BCE with logits. With a
teacher (``task.teacher``) the student learns to reproduce the teacher's per-attribute probabilities: the loss is
the cross-entropy between them averaged over attributes (the paper's emulation measure), taken minus the
teacher's own entropy so that it is zero when the student matches the teacher (same gradient), optionally mixed
with ground-truth BCE by ``task.gt_weight`` (0, the paper's setting, needs no labels at all). Losses are logged
averaged over the attributes and optimized summed over them, so the learning rate does not depend on their number.

In training the teacher runs on the student's own augmented batch, so every target describes the crop the student
sees. On the validation images, a fixed view, its outputs are by default computed once and cached on disk for later
epochs, resumed runs and other students.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torchmetrics.classification import MultilabelAccuracy, MultilabelAveragePrecision
from torchmetrics.utilities.data import dim_zero_cat
from tqdm import tqdm

from mnet_tasks.analysis import ranked_bars, save_analysis, writes_analysis
from mnet_tasks.config import ConfigError
from mnet_tasks.task_module import TaskModule, build_backbone
from mnet_tasks.tasks.attributes.adapter import AttributesAdapter
from mnet_tasks.teacher import Teacher, TeacherSource, checkpoint_teacher, timm_teacher

log = logging.getLogger(__name__)

LABEL_WEIGHT_DECAY = 4e-5  # weight_decay=null when training on labels; a distilled student gets none (the paper)
AP_TABLE = "attribute_ap.csv"


def emulation_cross_entropy(student_logits: torch.Tensor, teacher_probabilities: torch.Tensor) -> torch.Tensor:
    """The paper's emulation measure: the cross-entropy between the teacher's and the student's probability of
    each attribute, averaged over attributes and images."""
    return F.binary_cross_entropy_with_logits(student_logits, teacher_probabilities)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The emulation cross-entropy minus the teacher's entropy (the Bernoulli KL divergence, averaged over
    attributes): the same gradient for the student, but zero exactly when it reproduces the teacher."""
    teacher_probabilities = torch.sigmoid(teacher_logits)
    teacher_entropy = F.binary_cross_entropy_with_logits(teacher_logits, teacher_probabilities)
    return emulation_cross_entropy(student_logits, teacher_probabilities) - teacher_entropy


class MeanAttributeAP(MultilabelAveragePrecision):
    """The paper's mean AP: each attribute's average precision, averaged over the attributes.

    An attribute without a positive image has no AP (torchmetrics' macro average would count it as 0): it is left
    out of the mean, and NaN in ``per_attribute``. ``compute()`` also keeps ``per_attribute`` and ``positive_rate``
    (the AP of a random ranking) for the run's table.
    """

    def __init__(self, num_attributes: int) -> None:
        super().__init__(num_labels=num_attributes, average=None)
        self.per_attribute: torch.Tensor | None = None
        self.positive_rate: torch.Tensor | None = None

    def compute(self) -> torch.Tensor:
        ap = super().compute()
        self.positive_rate = dim_zero_cat(self.target).float().mean(0)
        self.per_attribute = torch.where(self.positive_rate > 0, ap, torch.nan)
        return self.per_attribute.nanmean()


@dataclass(frozen=True)
class TeacherOptions(TeacherSource):
    """``task.teacher`` (:class:`~mnet_tasks.teacher.TeacherSource`), and whether its outputs are cached.

    Attributes:
        cache: compute the teacher's outputs on the validation images (a fixed view: the validation transform at
            the teacher's input size) once, and reuse them every validation, in resumed runs and for other
            students; without it the teacher runs on the student's validation batches. Training always runs the
            teacher on the student's own augmented batch: a stored output would describe another crop.
        cache_dir: where the cached outputs are kept; by default ``<run folder>/teacher_cache``.
    """

    cache: bool = True
    cache_dir: str | None = None


def load_teacher(options: TeacherOptions, attribute_names: list[str]) -> Teacher:
    """Build the teacher ``options`` names, with one output per attribute of ``attribute_names``."""
    if not options.checkpoint:
        return timm_teacher(options, len(attribute_names), "outputs")

    def check(path: Path, hparams: Mapping[str, Any]) -> None:
        names = hparams.get("attribute_names")
        if names is None:
            raise ValueError(
                f"task.teacher.checkpoint={path} is not a checkpoint of the attributes task (no attribute_names in "
                "its hyper_parameters); give another model as task.teacher.timm with task.teacher.weights"
            )
        if list(names) != list(attribute_names):
            raise ValueError(
                f"task.teacher.checkpoint={path} predicts the attributes {list(names)}, but the data has "
                f"{list(attribute_names)}"
            )

    return checkpoint_teacher(options, len(attribute_names), check)


class AttributeTask(TaskModule):
    """MobileNetV1 with one sigmoid output per attribute.

    Logs ``val/map`` (mean over attributes of the average precision, the paper's metric; attributes without a
    positive validation image are left out, with a warning), ``val/mean_accuracy`` (at probability 0.5),
    ``val/loss`` (BCE against the labels) and, with a teacher, ``{train,val}/emulation_ce`` and ``val/teacher_map``.
    Each validation appends the per-attribute table to ``attribute_ap.csv`` in the run folder and, with
    ``task.error_analysis``, draws it (``analysis/attribute_ap.png``, its rows in ``analysis/attribute_ap.csv``).

    Args:
        attribute_names: the data's attributes (from the DataModule), in output order.
        weight_decay: ``None`` for 4e-5 on labels and 0 when distilling (the paper: the student needs none).
        teacher: :class:`TeacherOptions` as a mapping; no checkpoint and no timm model means plain training.
        gt_weight: with a teacher, the share of ground-truth BCE (on the labelled images) in the loss.
    """

    adapter = AttributesAdapter()

    def __init__(
        self,
        attribute_names: list[str],
        backbone: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        lr_schedule: Mapping[str, Any],
        weight_decay: float | None = None,
        teacher: Mapping[str, Any] | None = None,
        gt_weight: float = 0.0,
        monitor: str = "val/map",
        monitor_mode: str = "max",
        name: str = "attributes",
        native_resolution: int = 224,
        normalize: Mapping[str, Sequence[float]] | None = None,
    ):
        if not attribute_names:
            raise ValueError("task.attribute_names is empty: the data module reports them (head_kwargs)")
        if not 0.0 <= gt_weight <= 1.0:
            raise ValueError(f"task.gt_weight must be in [0, 1], got {gt_weight}")
        teacher_options = TeacherOptions.from_config(teacher)
        if weight_decay is None:  # resolved before the base class records the hyperparameters
            weight_decay = 0.0 if teacher_options.enabled else LABEL_WEIGHT_DECAY
        super().__init__(
            backbone,
            optimizer,
            lr_schedule,
            weight_decay,
            monitor,
            monitor_mode,
            name,
            native_resolution,
            normalize=normalize,
        )
        self.attribute_names = list(attribute_names)
        self.gt_weight = gt_weight
        self.teacher_options = teacher_options
        self.teacher = load_teacher(teacher_options, self.attribute_names) if teacher_options.enabled else None
        self.teacher_outputs: dict[str, torch.Tensor] = {}  # cached teacher logits per split, by sample index

        num_attributes = len(self.attribute_names)
        self.backbone = build_backbone(backbone, num_classes=num_attributes)
        # Logged as metric objects: Lightning computes them at the epoch's end, before any callback reads them.
        self.val_map = MeanAttributeAP(num_attributes)
        self.val_accuracy = MultilabelAccuracy(num_attributes, average="macro")  # at probability 0.5
        self.teacher_map = MeanAttributeAP(num_attributes) if self.teacher is not None else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    # --- the teacher ---

    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.network.to(self.device)

    def on_validation_start(self) -> None:
        if self.teacher is not None:
            self.teacher.network.to(self.device)
            if self.teacher_options.cache and "val" not in self.teacher_outputs:
                self.teacher_outputs["val"] = self._cached_teacher_outputs("val")

    def teacher_logits(self, split: str, batch: dict[str, Any]) -> torch.Tensor:
        """The teacher's logits for the batch: computed on the batch's own images (always in training), or looked
        up in the cache of the validation view."""
        if split in self.teacher_outputs:
            return self.teacher_outputs[split][batch["index"]]
        return self.teacher(batch["image"], self.normalize)

    def _cached_teacher_outputs(self, split: str) -> torch.Tensor:
        """The teacher's logits for every image of a split, from the cache file or computed once and saved.

        The file name is a digest of the teacher's weights, its input size, the images and their transform, so a
        cache is reused only for exactly the same outputs (by later epochs, a resumed run, other students).
        """
        datamodule = self.trainer.datamodule
        if not hasattr(datamodule, "unaugmented_dataloader"):
            raise TypeError(
                "task.teacher.cache reads the images through the DataModule's unaugmented_dataloader(): use "
                "mnet_tasks.tasks.attributes.data.CelebADataModule, or set task.teacher.cache=false"
            )
        loader = datamodule.unaugmented_dataloader(split, self.teacher.input_size)
        identity = [
            self.teacher.digest,
            A.to_dict(loader.dataset.transform),
            [str(path.absolute()) for path, _ in loader.dataset.samples],
        ]
        key = hashlib.sha1(json.dumps(identity).encode()).hexdigest()[:16]
        cache_dir = Path(self.teacher_options.cache_dir or Path(self.trainer.default_root_dir) / "teacher_cache")
        path = cache_dir / f"teacher_{split}_{key}.pt"
        if not path.is_file() and self.trainer.is_global_zero:
            outputs = torch.empty(len(loader.dataset), len(self.attribute_names))
            quiet = self.trainer.progress_bar_callback is None
            for batch in tqdm(loader, desc=f"teacher outputs ({split})", unit="batch", disable=quiet):
                images = self.prepare_images(batch["image"].to(self.device))
                outputs[batch["index"]] = self.teacher(images, self.normalize).cpu()
            cache_dir.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".partial-{os.getpid()}")
            torch.save(outputs, partial)
            os.replace(partial, path)  # never a half-written cache file
            log.info("cached the teacher's outputs for %d %s images in %s", len(outputs), split, path)
        self.trainer.strategy.barrier("teacher_cache")
        outputs = torch.load(path, map_location=self.device, weights_only=True)
        if outputs.shape != (len(loader.dataset), len(self.attribute_names)):
            raise ValueError(f"teacher cache {path} has shape {tuple(outputs.shape)}; delete it to recompute it")
        return outputs

    # --- steps ---

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """Unlabeled images can only be learned from a teacher: say so before any data is read."""
        teacher = cfg.task.get("teacher") or {}
        if cfg.data.get("include_unlabeled") and not (teacher.get("checkpoint") or teacher.get("timm")):
            raise ConfigError(
                "data.include_unlabeled=true trains on unlabeled images, which need a teacher: set "
                "task.teacher.checkpoint=path/to/teacher.ckpt (or task.teacher.timm with task.teacher.weights)"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        labeled, targets = batch["labeled"], batch["target"]
        if self.teacher is None:
            if not labeled.all():
                raise ValueError(
                    "a training batch holds unlabeled images (data.include_unlabeled=true) but task.teacher is not "
                    "set: unlabeled images can only be learned from a teacher"
                )
            loss = F.binary_cross_entropy_with_logits(logits, targets)
        else:
            teacher_logits = self.teacher_logits("train", batch)
            loss = distillation_loss(logits, teacher_logits)
            emulation = emulation_cross_entropy(logits.detach(), torch.sigmoid(teacher_logits))
            self.log("train/emulation_ce", emulation, on_step=False, on_epoch=True)
            if self.gt_weight > 0 and labeled.any():
                label_loss = F.binary_cross_entropy_with_logits(logits[labeled], targets[labeled])
                loss = (1 - self.gt_weight) * loss + self.gt_weight * label_loss
        self.log("train/loss", loss, prog_bar=True)
        # Summed over the attributes rather than averaged, for the optimizer: the gradient each output gets, and so
        # the learning rate that works, then does not shrink with the number of attributes.
        return loss * len(self.attribute_names)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        keep = self.distinct_items(batch_idx, len(batch["image"]))  # not DDP's padding repeats
        if keep == 0:
            return
        batch = {key: value[:keep] for key, value in batch.items()}
        logits = self(batch["image"])
        targets = batch["target"]
        labels = targets.int()
        probabilities = torch.sigmoid(logits)
        self.val_map.update(probabilities, labels)
        self.val_accuracy.update(probabilities, labels)
        self.log("val/map", self.val_map, prog_bar=True)
        self.log("val/mean_accuracy", self.val_accuracy)
        self.log("val/loss", F.binary_cross_entropy_with_logits(logits, targets), sync_dist=True)
        if self.teacher is not None:
            teacher_probabilities = torch.sigmoid(self.teacher_logits("val", batch))
            self.teacher_map.update(teacher_probabilities, labels)
            self.log("val/teacher_map", self.teacher_map)
            self.log("val/emulation_ce", emulation_cross_entropy(logits, teacher_probabilities), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """The per-attribute table (``compute()`` is cached: this costs nothing over the logged mean)."""
        if self.trainer.sanity_checking:
            return
        self.val_map.compute()
        undefined = [
            name for name, ap in zip(self.attribute_names, self.val_map.per_attribute.tolist(), strict=True) if ap != ap
        ]
        if undefined:
            log.warning("no positive validation image for %s: AP undefined, left out of val/map", ", ".join(undefined))
        if self.teacher_map is not None:
            self.teacher_map.compute()
        if self.trainer.is_global_zero:
            self._append_ap_table()
        if writes_analysis(self):
            self._save_ap_bars()

    def _ap_columns(self) -> dict[str, torch.Tensor]:
        """Per attribute: AP, positive rate (the AP of chance) and the teacher's AP, as this validation computed."""
        columns = {"ap": self.val_map.per_attribute, "positive_rate": self.val_map.positive_rate}
        if self.teacher_map is not None:
            columns["teacher_ap"] = self.teacher_map.per_attribute
        return columns

    def _save_ap_bars(self) -> None:
        """The attributes by AP, the mean (``val/map``) marked, with chance and the teacher beside them."""
        names = self.attribute_names
        columns = {key: dict(zip(names, values.tolist(), strict=True)) for key, values in self._ap_columns().items()}
        markers = {"chance (positive rate)": columns["positive_rate"]}
        if "teacher_ap" in columns:
            markers["teacher"] = columns["teacher_ap"]
        figure = ranked_bars(
            columns["ap"],
            xlabel="average precision",
            title=f"{self.hparams.name}, epoch {self.current_epoch}: average precision per attribute",
            mean=float(self.val_map.per_attribute.nanmean()),
            markers=markers,
        )
        table = [{"attribute": name, **{key: values[name] for key, values in columns.items()}} for name in names]
        save_analysis(self, {"attribute_ap": figure}, {"attribute_ap": table})

    def _append_ap_table(self) -> None:
        """One row per attribute and validation, into the run's history of them."""
        path = Path(self.trainer.default_root_dir) / AP_TABLE
        columns = self._ap_columns()
        new_file = not path.is_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", newline="") as file:
            writer = csv.writer(file)
            if new_file:
                writer.writerow(["epoch", "attribute", *columns])
            for i, name in enumerate(self.attribute_names):
                writer.writerow([self.current_epoch, name, *(f"{float(values[i]):.4f}" for values in columns.values())])
