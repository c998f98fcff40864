"""Exporting, running and scoring a geolocation model: a softmax head per cell partition, each cell with its
centroid."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnet_tasks.adapter import BrowseSample, TaskAdapter
from mnet_tasks.model_card import Head, ModelCard
from mnet_tasks.tasks.geolocalization.cells import Partition, write_partitions


class GeolocalizationAdapter(TaskAdapter):
    """PlaNet-style geolocation: a softmax head per cell partition, each cell with its centroid."""

    metric = "cell_top1"  # of the predicted head, over the validation photos that lie in one of its cells

    def heads(self, hparams: Mapping[str, Any]) -> list[Head]:
        partitions = hparams["partitions"]
        if not all("tokens" in partition for partition in partitions):
            raise ValueError("the checkpoint's partitions have no cells (a bare cost-profile module)")
        return [
            Head(
                p["name"],
                len(p["tokens"]),
                labels=list(p["tokens"]),
                centroids=[[lat, lon] for lat, lon in zip(p["latitudes"], p["longitudes"], strict=True)],
            )
            for p in partitions
        ]

    def predict_head(self, hparams: Mapping[str, Any]) -> str:
        """As the task: ``predict_head``, else the head with the most cells."""
        return hparams.get("predict_head") or max(self.heads(hparams), key=lambda head: head.num_outputs).name

    def data_kwargs(self, hparams: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
        """The checkpoint's cells, so that the validation photos are labelled with the cells the model predicts."""
        partitions = [Partition.from_hparams(p) for p in hparams["partitions"]]
        return {"partition_file": str(write_partitions(workdir / "cells.csv", partitions)), "output_dir": None}

    def images_and_targets(self, batch: Any, card: ModelCard) -> tuple[torch.Tensor, np.ndarray]:
        images, _, labels = batch  # one column of cell labels per head, in head order
        column = [head.name for head in card.heads].index(card.predict_head)
        return images, labels[:, column].numpy()

    def score(self, probabilities: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
        inside = targets >= 0
        return float((probabilities[inside].argmax(1) == targets[inside]).sum()), int(inside.sum())

    def browse_samples(self, batch: Any, datamodule: Any) -> list[BrowseSample]:
        """Each photo with its latitude and longitude, and its cell token in every head's partition."""
        images, locations, labels = batch
        partitions = datamodule.head_kwargs()["partitions"]
        samples = []
        for image, (latitude, longitude), cells in zip(images, locations.tolist(), labels.tolist(), strict=True):
            caption = [f"{latitude:.3f}, {longitude:.3f}"]
            for partition, cell in zip(partitions, cells, strict=True):
                caption.append(f"{partition['name']}: {partition['tokens'][cell] if cell >= 0 else 'no cell'}")
            samples.append(BrowseSample(image, caption))
        return samples
