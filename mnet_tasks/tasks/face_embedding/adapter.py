"""Exporting, running and scoring a face-embedding model: the embedding out, raw and L2-normalised."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnet_tasks.adapter import BrowseSample, TaskAdapter
from mnet_tasks.backbone import MobileNetV1
from mnet_tasks.model_card import Head, ModelCard
from mnet_tasks.task_module import TaskModule
from mnet_tasks.teacher import TeacherSource

BENCH_EMBEDDING_DIM = 128
SIMILARITY_CHUNK = 1024  # rows of the similarity matrix computed at once


def l2_normalize(features: torch.Tensor) -> torch.Tensor:
    """Unit rows, as ``F.normalize`` computes them (the norm floored at 1e-12); written as a sum of squares because
    the ONNX ``ReduceL2`` that ``norm`` exports to defeats ONNX Runtime's shape inference, which int8 quantization
    runs first."""
    return features * torch.rsqrt(features.pow(2).sum(1, keepdim=True).clamp_min(1e-24))


class EmbeddingNetwork(nn.Module):
    """The embedding layer's output, normalised over the batch statistics of training (``features``), and its
    L2-normalised form (``embedding``): the two outputs of an exported model, as a classifier's logits and
    probabilities are."""

    def __init__(self, backbone: nn.Module, norm: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.norm = norm

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.norm(self.backbone(images))
        return features, l2_normalize(features)


def nearest_neighbours(embeddings: np.ndarray) -> np.ndarray:
    """Each row's most similar other row (cosine of unit embeddings), in chunks to bound the memory."""
    vectors = l2_normalize(torch.from_numpy(np.asarray(embeddings, np.float32)))
    nearest = []
    for start in range(0, len(vectors), SIMILARITY_CHUNK):
        similarity = vectors[start : start + SIMILARITY_CHUNK] @ vectors.T
        rows = torch.arange(len(similarity))
        similarity[rows, rows + start] = -torch.inf  # not itself
        nearest.append(similarity.argmax(1))
    return torch.cat(nearest).numpy()


class FaceEmbeddingAdapter(TaskAdapter):
    """Face embeddings: one head of ``embedding_dim`` outputs, ``features`` raw and ``embedding`` normalised.

    The int8 check scores the validation photos by leave-one-out nearest neighbour: the share of photos (of a person
    with at least two) whose most similar other photo is of the same person; decisions are those neighbours.
    """

    activation = "l2_normalize"
    metric = "nearest_neighbour_identity"

    def rebuild_kwargs(self, cls: type[TaskModule], hparams: Mapping[str, Any]) -> dict[str, Any]:
        """No teacher (it only mattered for training), and no identity head for a distilled student."""
        kwargs = super().rebuild_kwargs(cls, hparams)
        if TeacherSource.from_config(hparams.get("teacher")).enabled:
            kwargs["num_identities"] = 0
        return {**kwargs, "teacher": None}

    def network(self, module: TaskModule) -> nn.Module:
        return EmbeddingNetwork(module.backbone, module.embedding_norm)

    def heads(self, hparams: Mapping[str, Any]) -> list[Head]:
        return [Head("embedding", int(hparams["embedding_dim"]))]

    def output_names(self, heads: Sequence[Head]) -> list[str]:
        return ["features", "embedding"]

    def inference_network(self, network: nn.Module, card: ModelCard | None) -> nn.Module:
        return network  # EmbeddingNetwork's outputs are already the card's

    def bench_name(self, alpha: float, size: int) -> str:
        return f"mnet_tasks face embedding a={alpha}"

    def bench_model(self, alpha: float, size: int) -> nn.Module:
        return EmbeddingNetwork(
            MobileNetV1(alpha=alpha, num_classes=BENCH_EMBEDDING_DIM), nn.BatchNorm1d(BENCH_EMBEDDING_DIM, affine=False)
        )

    def images_and_targets(self, batch: Any, card: ModelCard) -> tuple[torch.Tensor, np.ndarray]:
        return batch["image"], batch["identity"].numpy()

    def score(self, probabilities: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
        people, counts = np.unique(targets, return_counts=True)
        scored = np.isin(targets, people[counts > 1])  # a person with another photo to find
        correct = targets[nearest_neighbours(probabilities)] == targets
        return float(correct[scored].sum()), int(scored.sum())

    def decisions(self, probabilities: np.ndarray) -> np.ndarray:
        return nearest_neighbours(probabilities)

    def describe(self, card: ModelCard, outputs: Mapping[str, Any], paths: Sequence[str], options: Any) -> list[dict]:
        return [
            {"image": path, "embedding": row.tolist()} for path, row in zip(paths, outputs["embedding"], strict=True)
        ]

    def write_predictions(self, output_dir: Path, card: ModelCard, records: list[dict]) -> None:
        """``predictions.csv``: the image and its unit embedding, one column per dimension."""
        dims = card.heads[0].num_outputs
        with open(output_dir / "predictions.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["image", *(f"e{i}" for i in range(dims))])
            writer.writerows([record["image"], *(f"{v:.6f}" for v in record["embedding"])] for record in records)

    def verify(self, output_dir: Path, records: list[dict], others: list[dict], threshold: float | None) -> list[dict]:
        """Every image of one folder against every image of the other: ``verification.csv`` with the cosine
        similarity, and ``same`` (similarity above ``threshold``) when a threshold is given."""
        if not records or not others:
            return []
        first = torch.tensor([r["embedding"] for r in records])
        second = torch.tensor([r["embedding"] for r in others])
        similarity = (l2_normalize(first) @ l2_normalize(second).T).numpy()
        rows = []
        for i, record in enumerate(records):
            for j in np.argsort(-similarity[i], kind="stable"):
                row = {"image": record["image"], "other": others[j]["image"], "similarity": float(similarity[i, j])}
                if threshold is not None:
                    row["same"] = bool(similarity[i, j] > threshold)
                rows.append(row)
        with open(output_dir / "verification.csv", "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return rows

    def browse_samples(self, batch: Any, datamodule: Any) -> list[BrowseSample]:
        """Each face with its person: a training identity's folder name (``unlabeled`` for identity -1), or for a
        validation photo (whose batch carries its ``index`` among the pair lists' photos) the LFW name and photo
        number."""
        if "index" in batch:
            photos = datamodule.photos()
            captions = [f"{photos[index][0]} #{photos[index][1]}" for index in batch["index"].tolist()]
        else:
            names = datamodule.class_names
            captions = [names[identity] if identity >= 0 else "unlabeled" for identity in batch["identity"].tolist()]
        return [BrowseSample(image, [caption]) for image, caption in zip(batch["image"], captions, strict=True)]
