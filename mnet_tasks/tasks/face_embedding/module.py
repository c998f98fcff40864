"""Face embeddings (the paper's Table 14): a MobileNetV1 whose classifier layer is an embedding, L2-normalised.

Trained two ways. On labelled identities, a cosine-margin softmax (CosFace: Wang et al., 2018) over the training
identities shapes the embedding; that is how a teacher is made. With a teacher (``task.teacher``: a checkpoint of
this task, or a timm model and its weights), the student minimises the squared distance between its embedding and
the teacher's on the same augmented batch, as the paper's students emulate FaceNet: no identity labels are needed,
so unlabeled faces train it too. Validation embeds every photo the pair lists name and scores the pairs
(:class:`~mnet_tasks.tasks.face_embedding.metrics.PairVerification`): LFW's 10-fold accuracy, TAR at FAR 1e-3 and
1e-4, ROC AUC; with a teacher, the teacher's own and the student-teacher distance too; ``roc.png`` in the run folder.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torchmetrics import MeanMetric

from mnet_tasks.config import ConfigError
from mnet_tasks.task_module import TaskModule, build_backbone
from mnet_tasks.tasks.face_embedding.adapter import FaceEmbeddingAdapter, l2_normalize
from mnet_tasks.tasks.face_embedding.metrics import TAR_PREFIX, PairVerification, negatives_needed
from mnet_tasks.tasks.face_embedding.roc_plot import roc_curve, save_roc
from mnet_tasks.teacher import Teacher, TeacherSource, checkpoint_teacher, timm_teacher

log = logging.getLogger(__name__)

LABEL_WEIGHT_DECAY = 4e-5  # weight_decay=null on identities; a distilled student gets none (as for attributes)
ROC_PICTURE = "roc.png"
# What validation logs of PairVerification's results, for the model and for its teacher (Table 14's columns).
STUDENT_METRICS = ("accuracy", "accuracy_std", "tar_far_1e-3", "tar_far_1e-4", "auc")
TEACHER_METRICS = ("accuracy", "tar_far_1e-4")


def embedding_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Squared L2 distance between each pair of unit embeddings (``2 - 2 cos``): the distillation loss per image."""
    return (l2_normalize(student) - l2_normalize(teacher)).pow(2).sum(1)


class CosFaceHead(nn.Module):
    """Cosine-margin logits over the training identities: ``scale * (cos(θ_j) - margin [j = label])``, θ_j the
    angle between the embedding and identity j's weight. The margin pushes each identity's faces closer to its
    own direction than plain softmax would, so a fixed cosine threshold verifies unseen identities."""

    def __init__(self, num_identities: int, embedding_dim: int, scale: float, margin: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_identities, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)
        self.scale, self.margin = scale, margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The cosine of each embedding with each identity's direction: its nearest identity is its prediction."""
        return l2_normalize(embeddings) @ l2_normalize(self.weight).T

    def forward(self, embeddings: torch.Tensor, identities: torch.Tensor) -> torch.Tensor:
        cosine = self.cosine(embeddings)
        margin = F.one_hot(identities, cosine.shape[1]).to(cosine.dtype) * self.margin
        return self.scale * (cosine - margin)


def embedding_norm(embedding_dim: int) -> nn.BatchNorm1d:
    """Centres and scales the embedding layer's output over the batch before it is L2-normalised (as InsightFace's
    networks end): unit embeddings then spread over the sphere rather than gathering around one mean direction,
    where a shared offset would leave identities only small angles apart, for the verification threshold and for a
    distilled student alike. No affine part: a learned shift would bring the common direction back."""
    return nn.BatchNorm1d(embedding_dim, affine=False)


def load_teacher(source: TeacherSource, embedding_dim: int) -> Teacher:
    """The teacher ``source`` names, whose embedding must have ``embedding_dim`` dimensions like the student's."""
    if not source.checkpoint:
        return timm_teacher(source, embedding_dim, "embedding dimensions")

    def check(path: Path, hparams: Mapping[str, Any]) -> None:
        if "embedding_dim" not in hparams:
            raise ValueError(
                f"task.teacher.checkpoint={path} is not a checkpoint of the face_embedding task (no embedding_dim in "
                "its hyper_parameters); give another model as task.teacher.timm with task.teacher.weights"
            )
        if hparams["embedding_dim"] != embedding_dim:
            raise ValueError(
                f"task.teacher.checkpoint={path} embeds in {hparams['embedding_dim']} dimensions but "
                f"task.embedding_dim={embedding_dim}: the student must match its teacher"
            )

    return checkpoint_teacher(source, embedding_dim, check, after={"embedding_norm": embedding_norm(embedding_dim)})


class FaceEmbeddingTask(TaskModule):
    """MobileNetV1 embedding faces in ``embedding_dim`` dimensions, L2-normalised.

    Logs ``val/accuracy`` (LFW's 10-fold protocol), ``val/accuracy_std``, ``val/tar_far_1e-3``,
    ``val/tar_far_1e-4`` (NaN when the lists hold too few mismatched pairs to measure it), ``val/auc``; with a
    teacher also ``val/teacher_distance`` (mean squared distance between the student's and the teacher's unit
    embeddings, the loss) and the teacher's ``val/teacher_accuracy`` and ``val/teacher_tar_far_1e-4``.

    Args:
        num_identities: the training identities (from the DataModule); 0 for a distilled student rebuilt from its
            checkpoint, which has no identity head.
        embedding_dim: the embedding's dimension (FaceNet's is 128).
        margin / scale: CosFace's additive cosine margin and logit scale, for training on identities.
        weight_decay: ``None`` for 4e-5 on identities and 0 when distilling.
        teacher: :class:`~mnet_tasks.teacher.TeacherSource` as a mapping; none: training on the identities.
    """

    adapter = FaceEmbeddingAdapter()

    def __init__(
        self,
        num_identities: int,
        backbone: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        lr_schedule: Mapping[str, Any],
        embedding_dim: int = 128,
        margin: float = 0.2,
        scale: float = 30.0,
        weight_decay: float | None = None,
        teacher: Mapping[str, Any] | None = None,
        monitor: str = "val/accuracy",
        monitor_mode: str = "max",
        name: str = "face_embedding",
        native_resolution: int = 224,
        normalize: Mapping[str, Sequence[float]] | None = None,
        finetune: Mapping[str, Any] | None = None,
    ):
        teacher_source = TeacherSource.from_config(teacher)
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"task.embedding_dim must be a positive integer, got {embedding_dim!r}")
        if (not teacher_source.enabled and num_identities == 1) or num_identities < 0:
            raise ValueError(
                f"training on identities needs at least 2 of them (task.num_identities={num_identities}, from the "
                "data's identity folders); or distill from a teacher (task.teacher.checkpoint)"
            )
        if weight_decay is None:  # resolved before the base class records the hyperparameters
            weight_decay = 0.0 if teacher_source.enabled else LABEL_WEIGHT_DECAY
        super().__init__(
            backbone,
            optimizer,
            lr_schedule,
            weight_decay,
            monitor,
            monitor_mode,
            name,
            native_resolution,
            finetune=finetune,
            normalize=normalize,
        )
        self.embedding_dim = embedding_dim
        self.backbone = build_backbone(backbone, num_classes=embedding_dim)
        self.embedding_norm = embedding_norm(embedding_dim)
        distilled = teacher_source.enabled or num_identities == 0
        self.identity_head = None if distilled else CosFaceHead(num_identities, embedding_dim, scale, margin)
        self.teacher = load_teacher(teacher_source, embedding_dim) if teacher_source.enabled else None
        self.teacher_distance = MeanMetric() if self.teacher is not None else None
        self.verification: PairVerification | None = None  # built in setup(), from the data's pairs
        self.teacher_verification: PairVerification | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.embedding_norm(self.backbone(images)))

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """Unlabeled faces can only be learned from a teacher: say so before any data is read."""
        teacher = cfg.task.get("teacher") or {}
        if cfg.data.get("include_unlabeled") and not (teacher.get("checkpoint") or teacher.get("timm")):
            raise ConfigError(
                "data.include_unlabeled=true trains on unlabeled faces, which need a teacher: set "
                "task.teacher.checkpoint=path/to/teacher.ckpt (or task.teacher.timm with task.teacher.weights)"
            )

    def setup(self, stage: str) -> None:
        """The verification metrics, over the pairs of the data (its ``verification_pairs()``)."""
        datamodule = self.trainer.datamodule
        if not hasattr(datamodule, "verification_pairs"):
            raise TypeError(
                "the face_embedding task scores the pairs its DataModule gives by verification_pairs(): use "
                "mnet_tasks.tasks.face_embedding.data.FaceDataModule or a DataModule with that method"
            )
        pairs = datamodule.verification_pairs()
        self.check_monitor_is_measurable(int((~pairs["same"]).sum()))
        self.verification = PairVerification(**pairs)
        if self.teacher is not None:
            self.teacher_verification = PairVerification(**pairs)

    def check_monitor_is_measurable(self, negatives: int) -> None:
        """A TAR at a FAR the pairs cannot measure is NaN: as the monitor it would pick checkpoints (and a
        distillation's teacher) at random. Say so before training."""
        monitor = self.hparams.monitor
        if not monitor.startswith(f"val/{TAR_PREFIX}"):
            return
        needed = negatives_needed(float(monitor.removeprefix(f"val/{TAR_PREFIX}")))
        if negatives < needed:
            raise ValueError(
                f"task.monitor={monitor} needs at least {needed} mismatched pairs, but the pair lists hold "
                f"{negatives}: add a large pair list (data.large_pairs; python -m "
                "mnet_tasks.tasks.face_embedding.pairs writes one) or monitor LFW's protocol, task.monitor=val/accuracy"
            )

    def on_fit_start(self) -> None:
        self.teacher_to_device()

    def on_validation_start(self) -> None:
        self.teacher_to_device()

    def teacher_to_device(self) -> None:
        if self.teacher is not None:
            self.teacher.network.to(self.device)

    def teacher_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.teacher(images, self.normalize))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if len(batch["image"]) < 2:  # unreadable files thinned it: the embedding's BatchNorm needs two faces
            log.warning("skipped training batch %d: it holds fewer than 2 readable faces", batch_idx)
            return None
        if self.teacher is None and self.identity_head is None:
            raise ValueError(
                "nothing to learn from: no task.teacher and no identity head (task.num_identities=0, as a distilled "
                "student is rebuilt for export); train on identity folders or give task.teacher.checkpoint"
            )
        embeddings = self(batch["image"])
        if self.teacher is not None:  # on the student's own augmented batch
            loss = embedding_distance(embeddings, self.teacher_embeddings(batch["image"])).mean()
        else:
            identities = batch["identity"]
            if (identities < 0).any():
                raise ValueError(
                    "a training batch holds unlabeled faces (data.include_unlabeled=true) but task.teacher is not "
                    "set: unlabeled faces can only be learned from a teacher"
                )
            loss = F.cross_entropy(self.identity_head(embeddings, identities), identities)
            with torch.no_grad():
                accuracy = (self.identity_head.cosine(embeddings).argmax(1) == identities).float().mean()
            self.log("train/identity_top1", accuracy, on_step=False, on_epoch=True)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        keep = self.distinct_items(batch_idx, len(batch["image"]))  # not DDP's padding repeats
        if keep == 0:
            return
        images, indices = batch["image"][:keep], batch["index"][:keep]
        embeddings = self(images)
        self.verification.update(embeddings, indices)
        if self.teacher is not None:
            teacher = self.teacher_embeddings(images)
            self.teacher_verification.update(teacher, indices)
            self.teacher_distance.update(embedding_distance(embeddings, teacher))
            self.log("val/teacher_distance", self.teacher_distance)

    def on_validation_epoch_end(self) -> None:
        """Score the pairs (every process holds every embedding after the metric's gather), log, draw the ROC."""
        metrics = {"student": self.verification, "teacher": self.teacher_verification}
        scored = {role: metric for role, metric in metrics.items() if metric is not None}
        if self.trainer.sanity_checking:  # two batches' photos: their pairs would only warn that they are too few
            for metric in scored.values():
                metric.reset()
            return
        for role, metric in scored.items():
            values = metric.compute()
            keys, prefix = (STUDENT_METRICS, "") if role == "student" else (TEACHER_METRICS, "teacher_")
            for key in keys:
                self.log(f"val/{prefix}{key}", values[key], prog_bar=key == "accuracy" and role == "student")
            metric.reset()
        # The threshold LFW's protocol chose, averaged over its folds: what predict's compare_with can decide at.
        self.log("val/threshold", self.verification.fold_thresholds.mean().float())
        same = self.verification.same_used
        if self.trainer.is_global_zero and 0 < int(same.sum()) < len(same):
            names = {"student": "student", "teacher": "teacher"} if self.teacher else {"student": "model"}
            curves = {names[role]: roc_curve(m.scores.numpy(), m.same_used.numpy()) for role, m in scored.items()}
            save_roc(Path(self.trainer.default_root_dir) / ROC_PICTURE, curves)
