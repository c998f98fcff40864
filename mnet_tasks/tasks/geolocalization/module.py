"""Photo geolocation as PlaNet does it: a softmax over adaptive S2 cells of the earth, evaluated by the great-circle
distance from the predicted location (the centroid of the chosen cell) to the truth at the Im2GPS scales."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_only
from torch import nn
from torchmetrics.utilities import dim_zero_cat

from mnet_tasks.analysis import collects_analysis, save_analysis
from mnet_tasks.distributed import gather_objects
from mnet_tasks.task_module import TaskModule, build_backbone
from mnet_tasks.tasks.geolocalization.adapter import GeolocalizationAdapter
from mnet_tasks.tasks.geolocalization.cells import Partition, describe
from mnet_tasks.tasks.geolocalization.distance import great_circle_km
from mnet_tasks.tasks.geolocalization.metrics import IM2GPS_SCALES_KM, geo_metrics, scale_name
from mnet_tasks.tasks.geolocalization.plot import error_cdf_figure, plot_locations, within_shares

PREDICTIONS = ("top_cell", "hierarchy")
PLOT_FOLDER = "geolocation"


def _nearest(points: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Index of the candidate nearest (great circle) to each point; both ``(N, 2)`` degrees."""
    distances = great_circle_km(points[:, None, 0], points[:, None, 1], candidates[None, :, 0], candidates[None, :, 1])
    return distances.argmin(1)


class GeolocalizationTask(TaskModule):
    """MobileNetV1 with one softmax head per cell partition (PlaNet; coarse/middle/fine heads share the backbone).

    Args:
        partitions: one entry per head, filled by the DataModule's ``head_kwargs()``: ``name``, ``tokens``,
            ``counts``, ``latitudes``, ``longitudes`` (:meth:`.cells.Partition.to_hparams`).
            They are saved with the hyperparameters, so a checkpoint carries its partition. Entries of only
            ``name`` and ``num_cells`` size the heads for a bare cost profile; such a module cannot locate.
        prediction: ``top_cell``: the centroid of the most probable cell of ``predict_head``; ``hierarchy``:
            that cell's probability times, for every other head, the probability of its cell holding the
            candidate's centroid (Müller-Budack et al., 2018), then the best cell's centroid.
        predict_head: the head whose cells give the location; null: the one with the most cells (the finest).
        label_smoothing: of the cross-entropy of every head; the loss is the sum over heads.
        plot_points: validation photos drawn in the per-evaluation picture (the first ones of the split).

    With ``task.error_analysis``, each validation also writes the error's cumulative distribution with the
    ``distance_scales_km`` marked (``analysis/error_cdf.png``, its shares at the scales in ``error_cdf.csv``).
    """

    adapter = GeolocalizationAdapter()

    def __init__(
        self,
        partitions: Sequence[Mapping[str, Any]] | None,
        backbone: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        lr_schedule: Mapping[str, Any],
        weight_decay: float = 4e-5,
        label_smoothing: float = 0.0,
        prediction: str = "top_cell",
        predict_head: str | None = None,
        distance_scales_km: Sequence[float] = IM2GPS_SCALES_KM,
        plot_points: int = 500,
        monitor: str = "val/acc_750km",
        monitor_mode: str = "max",
        name: str = "geolocalization",
        native_resolution: int = 224,
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
        if not partitions:
            raise ValueError(
                "task.partitions is empty: the cells come from the data module (GeoDataModule.head_kwargs()), "
                "which python -m mnet_tasks passes in; build the module with them"
            )
        if prediction not in PREDICTIONS:
            raise ValueError(f"task.prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
        head_sizes = {p["name"]: len(p["tokens"]) if "tokens" in p else int(p["num_cells"]) for p in partitions}
        if len(head_sizes) != len(partitions):
            raise ValueError(f"partition names must be unique, got {[p['name'] for p in partitions]}")
        if predict_head is None:
            predict_head = max(head_sizes, key=head_sizes.get)
        if predict_head not in head_sizes:
            raise ValueError(
                f"task.predict_head={predict_head!r} is not a partition; choose from {', '.join(head_sizes)}"
            )
        self.predict_head = predict_head
        self.label_smoothing = label_smoothing
        self.plot_points = plot_points

        self.backbone = build_backbone(backbone, num_classes=0)  # pooled features; the heads classify
        self.heads = nn.ModuleDict({name: nn.Linear(self.backbone.num_features, n) for name, n in head_sizes.items()})
        self.partitions = [Partition.from_hparams(p) for p in partitions if "tokens" in p]
        # Plain tensors, not buffers: float64 degrees must survive half-precision training untouched, and the
        # checkpoint already carries the partition in its hyperparameters.
        self.centroids = {p.name: torch.as_tensor(p.centroids) for p in self.partitions}
        self.parent_cells = self._parent_cells() if prediction == "hierarchy" and self.centroids else {}
        self.val_metrics = geo_metrics(distance_scales_km).clone(prefix="val/")
        self._plotted: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _parent_cells(self) -> dict[str, torch.Tensor]:
        """For every other head, the index of its cell holding each predict-head cell's centroid (the nearest cell
        by centroid where none holds it, e.g. when that coarser cell was dropped)."""
        finest = self.centroids[self.predict_head]
        parents = {}
        for partition in self.partitions:
            if partition.name == self.predict_head:
                continue
            index = torch.as_tensor(partition.assign(finest[:, 0].tolist(), finest[:, 1].tolist()))
            outside = index < 0
            if outside.any():
                index[outside] = _nearest(finest[outside], self.centroids[partition.name])
            parents[partition.name] = index
        return parents

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cell logits of every head."""
        features = self.backbone(images)
        return {name: head(features) for name, head in self.heads.items()}

    def locations_from_logits(self, logits: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(N, 2)`` predicted latitude/longitude in degrees (see ``prediction``)."""
        if len(self.centroids) != len(self.heads):
            raise RuntimeError(
                "the heads were sized by num_cells alone (a bare cost profile): build the task with the data's "
                "partitions (GeoDataModule.head_kwargs()) to locate photos"
            )
        scores = logits[self.predict_head].log_softmax(1)
        for name, parent in self.parent_cells.items():
            scores = scores + logits[name].log_softmax(1)[:, parent.to(scores.device)]
        centroids = self.centroids[self.predict_head].to(scores.device)
        return centroids[scores.argmax(1)]

    @torch.no_grad()
    def locate(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 2)`` latitude/longitude in degrees of normalised ``(N, 3, H, W)`` images."""
        return self.locations_from_logits(self(images))

    def cell_loss(self, logits: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Sum over heads of the mean cross-entropy over the photos that lie in one of the head's cells.

        ``labels`` is ``(N, heads)``, one column per partition in order, -1 where a photo is in no kept cell.
        """
        total = logits[self.predict_head].new_zeros(())
        for column, partition in enumerate(self.partitions):
            target = labels[:, column]
            summed = F.cross_entropy(
                logits[partition.name], target, ignore_index=-1, reduction="sum", label_smoothing=self.label_smoothing
            )
            total = total + summed / (target >= 0).sum().clamp(min=1)
        return total

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        images, _, labels = batch
        loss = self.cell_loss(self(images), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        keep = self.distinct_items(batch_idx, len(batch[0]))  # not DDP's padding repeats
        if keep == 0:
            return
        images, locations, labels = (part[:keep] for part in batch)
        logits = self(images)
        self.log("val/loss", self.cell_loss(logits, labels), sync_dist=True)
        predicted = self.locations_from_logits(logits)
        self.val_metrics.update(predicted, locations)
        self.log_dict(self.val_metrics)
        self.log("val/images", float(keep), reduce_fx="sum", sync_dist=True)  # located, over all processes
        room = self.plot_points - sum(len(true) for true, _ in self._plotted)
        if room > 0:
            self._plotted.append((locations[:room].cpu(), predicted[:room].cpu()))

    def predict_step(self, batch: torch.Tensor | Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Locations of a batch of images (or of the images first in a ``(images, ...)`` batch)."""
        return self.locate(batch if isinstance(batch, torch.Tensor) else batch[0])

    def on_validation_epoch_start(self) -> None:
        self._plotted = []

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking and self._plotted:
            self._save_picture()
        if collects_analysis(self):
            # Every photo's error, as the median metric holds them (the val/acc_* metrics count the same ones).
            stored = self.val_metrics["median_km"].distances
            local = dim_zero_cat(stored).cpu() if len(stored) else torch.zeros(0, dtype=torch.float64)
            distances = torch.cat(gather_objects(local)).numpy()
            if self.trainer.is_global_zero and len(distances):
                self._save_error_cdf(distances)

    def _save_error_cdf(self, distances: np.ndarray) -> None:
        scales = self.hparams.distance_scales_km
        shares = within_shares(distances, scales)
        title = f"{self.hparams.name}, epoch {self.current_epoch}: error of {len(distances)} validation photos"
        table = [
            {"scale_km": scale, "metric": f"val/{scale_name(scale)}", "share_within": share}
            for scale, share in zip(scales, shares.tolist(), strict=True)
        ]
        save_analysis(self, {"error_cdf": error_cdf_figure(distances, scales, title)}, {"error_cdf": table})

    @rank_zero_only
    def _save_picture(self) -> None:
        values = self.trainer.callback_metrics  # this epoch's, computed by Lightning before this hook
        true = torch.cat([true for true, _ in self._plotted]).numpy()
        predicted = torch.cat([pred for _, pred in self._plotted]).numpy()
        scales = ", ".join(
            f"{scale_name(t).removeprefix('acc_')} {100 * values[f'val/{scale_name(t)}']:.1f}%"
            for t in self.hparams.distance_scales_km
        )
        title = (
            f"{self.hparams.name}, epoch {self.current_epoch}: {scales}; median {values['val/median_km']:.0f} km "
            f"({describe(self.partitions)}; {len(true)} photos shown)"
        )
        path = Path(self.trainer.default_root_dir) / PLOT_FOLDER / f"val_epoch{self.current_epoch:03d}.png"
        plot_locations(path, true, predicted, title)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose cells differ from the data's: its outputs would name the wrong places."""
        saved = checkpoint.get("hyper_parameters", {}).get("partitions")
        if saved is None:
            return

        def identity(partitions: Sequence[Mapping[str, Any]]) -> list[tuple]:
            return [(p["name"], list(p.get("tokens", ())), list(p.get("counts", ()))) for p in partitions]

        if identity(saved) != identity(self.hparams.partitions):
            trained = describe([Partition.from_hparams(p) for p in saved])
            raise ValueError(
                f"the checkpoint was trained on other cells ({trained}) than the data gives "
                f"({describe(self.partitions)}): evaluate with data.partition_file=<the training run>/cells.csv"
            )
