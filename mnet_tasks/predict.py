"""Run a trained or exported model on a folder of images and write what it predicts.

``python -m mnet_tasks.predict model=<checkpoint | .onnx | .pt> images=<folder> [output_dir=...]`` writes
``predictions.csv`` and ``predictions.json`` in ``output_dir``. A checkpoint runs in PyTorch with BatchNorm folded
and channels_last memory; an exported ``.onnx`` in ONNX Runtime (int8 models too), a ``.pt`` as TorchScript. Every
image goes through the model's validation preprocessing (from its model card).

- classification, fine-grained: the top class and its probability, and the ``top_k`` classes;
- attributes: the probability of every attribute, and the attributes present (probability >= 0.5);
- geolocalization: the most probable cell of the predicted head, its probability and its centroid (the
  ``top_cell`` prediction), and the ``top_k`` cells.

Classes are named by index (a classification checkpoint keeps no class names), attributes by name, cells by token.
Images that cannot be read are skipped, listed with the reason in the JSON and the log.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from mnet_tasks.config import ConfigError
from mnet_tasks.data.imagefolder import is_image_file
from mnet_tasks.data.images import ImageReadError, read_rgb
from mnet_tasks.export import INPUT_NAME, load_torchscript, onnx_card, onnx_session
from mnet_tasks.inference import ModelCard, compose_for_checkpoint, load_trained

log = logging.getLogger(__name__)

PRESENT_THRESHOLD = 0.5
RunModel = Callable[[torch.Tensor], dict[str, np.ndarray]]


class ImageFiles(Dataset):
    """``(path, image tensor or None, error or None)``: an unreadable file is reported, not fatal."""

    def __init__(self, paths: Sequence[Path], transform: Callable[..., dict]):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor | None, str | None]:
        path = self.paths[index]
        try:
            return str(path), self.transform(image=read_rgb(path))["image"], None
        except ImageReadError as error:
            return str(path), None, str(error)


def collate_readable(items: list[tuple[str, torch.Tensor | None, str | None]]) -> dict[str, Any]:
    readable = [(path, image) for path, image, _ in items if image is not None]
    return {
        "paths": [path for path, _ in readable],
        "images": torch.stack([image for _, image in readable]) if readable else None,
        "skipped": [{"image": path, "error": error} for path, image, error in items if image is None],
    }


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"images: no folder at {folder}")
    paths = sorted(path for path in folder.rglob("*") if path.is_file() and is_image_file(path.name))
    if not paths:
        raise ConfigError(f"images: no image files (.jpg, .png, ...) under {folder}")
    return paths


def load_model(path: str | Path, crop_pct: float, threads: int | None) -> tuple[ModelCard, RunModel, str]:
    """The card, a function from a batch of preprocessed images to every named output, and the runtime's name."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model: no file at {path}")
    if path.suffix == ".onnx":
        session = onnx_session(path, threads)
        card = onnx_card(session, path)

        def run_onnx(images: torch.Tensor) -> dict[str, np.ndarray]:
            return dict(
                zip(card.output_names, session.run(card.output_names, {INPUT_NAME: images.numpy()}), strict=True)
            )

        return card, run_onnx, "onnxruntime"
    if threads:
        torch.set_num_threads(threads)
    if path.suffix == ".pt":
        network, card = load_torchscript(path)
        memory_format = torch.contiguous_format
        runtime = "torchscript"
    elif path.suffix == ".ckpt":
        trained = load_trained(path, crop_pct)
        network, card = trained.network(), trained.card
        memory_format = torch.channels_last
        runtime = "pytorch (BatchNorm folded, channels_last)"
    else:
        raise ConfigError(f"model: {path} is neither a checkpoint (.ckpt) nor an exported model (.onnx, .pt)")
    network = network.to(memory_format=memory_format)

    def run_torch(images: torch.Tensor) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outputs = network(images.contiguous(memory_format=memory_format))
        return {name: output.numpy() for name, output in zip(card.output_names, outputs, strict=True)}

    return card, run_torch, runtime


def describe_predictions(card: ModelCard, outputs: dict[str, np.ndarray], paths: list[str], top_k: int) -> list[dict]:
    """One record per image, read from the predicted head's probabilities."""
    head = card.head(card.predict_head)
    probabilities = outputs[card.probability_output(head.name)]
    names = head.labels or [str(index) for index in range(head.num_outputs)]
    records = []
    for path, row in zip(paths, probabilities, strict=True):
        if card.activation == "sigmoid":
            records.append(
                {
                    "image": path,
                    "probabilities": {name: float(p) for name, p in zip(names, row, strict=True)},
                    "present": [name for name, p in zip(names, row, strict=True) if p >= PRESENT_THRESHOLD],
                }
            )
            continue
        ranked = np.argsort(-row, kind="stable")[:top_k]
        record = {"image": path, "label": names[ranked[0]], "probability": float(row[ranked[0]])}
        if head.centroids:
            record["latitude"], record["longitude"] = head.centroids[ranked[0]]
        record["top_k"] = [{"label": names[i], "probability": float(row[i])} for i in ranked]
        records.append(record)
    return records


def write_csv(path: Path, card: ModelCard, records: list[dict]) -> None:
    """Attributes: one probability column per attribute; classes and cells: the top one, and the top k as
    ``label:probability`` pairs separated by spaces."""
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        if card.activation == "sigmoid":
            names = card.head(card.predict_head).labels
            writer.writerow(["image", *names])
            writer.writerows(
                [record["image"], *(f"{record['probabilities'][n]:.6f}" for n in names)] for record in records
            )
            return
        located = bool(card.head(card.predict_head).centroids)
        writer.writerow(["image", "label", "probability", *(["latitude", "longitude"] if located else []), "top_k"])
        for record in records:
            place = [record["latitude"], record["longitude"]] if located else []
            top = " ".join(f"{entry['label']}:{entry['probability']:.6f}" for entry in record["top_k"])
            writer.writerow([record["image"], record["label"], f"{record['probability']:.6f}", *place, top])


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict every image under ``cfg.images`` with ``cfg.model``; returns what predictions.json holds."""
    if not cfg.images:
        raise ConfigError("images is required: images=/path/to/folder")
    paths = list_images(cfg.images)
    card, run_model, runtime = load_model(cfg.model, cfg.data.crop_pct, cfg.threads)
    loader = DataLoader(
        ImageFiles(paths, card.transform()),
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        collate_fn=collate_readable,
    )
    records, skipped = [], []
    for batch in loader:
        skipped += batch["skipped"]
        if batch["images"] is not None:
            records += describe_predictions(card, run_model(batch["images"]), batch["paths"], cfg.top_k)
    for entry in skipped:
        log.warning("skipped: %s", entry["error"])
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_csv(output_dir / "predictions.csv", card, records)
    result = {
        "model": str(cfg.model),
        "runtime": runtime,
        "task": card.task,
        "input_size": card.input_size,
        "images": str(cfg.images),
        "predictions": records,
        "skipped": skipped,
    }
    (output_dir / "predictions.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(overrides: list[str]) -> None:
    cfg = compose_for_checkpoint("predict", overrides, "model")
    result = predict(cfg)
    print(
        f"{len(result['predictions'])} images predicted by {result['model']} ({result['runtime']}), "
        f"{len(result['skipped'])} skipped: {Path(cfg.output_dir) / 'predictions.csv'}, predictions.json"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
