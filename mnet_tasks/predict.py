"""Run a trained or exported model on a folder of images and write what it predicts.

``python -m mnet_tasks.predict model=<checkpoint | .onnx | .pt> images=<folder> [output_dir=...]`` writes
``predictions.csv`` and ``predictions.json`` in ``output_dir``. A checkpoint runs in PyTorch with BatchNorm folded
and channels_last memory; an exported ``.onnx`` in ONNX Runtime (int8 models too), a ``.pt`` as TorchScript. Every
image goes through the model's preprocessing (from its model card); its task adapter reads the outputs:

- classification, fine-grained: the top class and its probability, and the ``top_k`` classes;
- attributes: the probability of every attribute, and the attributes present (probability >= 0.5);
- geolocalization: the most probable cell of the predicted head, its probability and its centroid (the
  ``top_cell`` prediction), and the ``top_k`` cells;
- detection: the boxes scoring at least ``min_score`` with their category, one CSV row each, and every image with
  its boxes drawn in ``pictures/``;
- face embeddings: each image's unit embedding; with ``compare_with=<another folder>``, every image against every
  image of that folder (``verification.csv``: cosine similarity, and ``same`` above ``threshold`` when one is given).

Classes are named by index (a classification checkpoint keeps no class names), attributes by name, cells by token.
Images that cannot be read are skipped, listed with the reason in the JSON and the log.

Command line: Hydra overrides on ``conf/predict.yaml``, composed in-process like export's (the model's task config
is chosen first; no run folder).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from mnet_tasks.adapter import RunExported, adapter_of
from mnet_tasks.config import ConfigError
from mnet_tasks.data.datamodule import IMAGE_EXTENSIONS, is_image_file
from mnet_tasks.data.images import ImageReadError, read_rgb
from mnet_tasks.export import load_torchscript, torch_call
from mnet_tasks.model_card import ModelCard
from mnet_tasks.onnx_io import onnx_call, onnx_card, onnx_session
from mnet_tasks.registry import task_class
from mnet_tasks.trained import compose_for_checkpoint, load_trained, validation_crop

log = logging.getLogger(__name__)


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
    """Readable images stay a list (detection inputs differ in size); unreadable ones are reported."""
    readable = [(path, image) for path, image, _ in items if image is not None]
    return {
        "paths": [path for path, _ in readable],
        "images": [image for _, image in readable],
        "skipped": [{"image": path, "error": error} for path, image, error in items if image is None],
    }


def list_images(folder: str | Path) -> tuple[list[Path], list[dict[str, str]]]:
    """The image files under ``folder`` (searched recursively), and every other file with why it is left out."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"images: no folder at {folder}")
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    paths = [path for path in files if is_image_file(path.name)]
    if not paths:
        raise ConfigError(f"images: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {folder}")
    reason = f"extension not supported (predict reads {', '.join(sorted(IMAGE_EXTENSIONS))})"
    return paths, [{"image": str(path), "error": f"{path}: {reason}"} for path in files if not is_image_file(path.name)]


def load_model(path: str | Path, crop_pct: float, threads: int | None) -> tuple[ModelCard, RunExported, str]:
    """The card, the model as a function from an input tensor to its outputs, and the runtime's name."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model: no file at {path}")
    if path.suffix == ".onnx":
        session = onnx_session(path, threads)
        return onnx_card(session, path), onnx_call(session), "onnxruntime"
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
    run_torch = torch_call(network)

    def run(images: torch.Tensor) -> Sequence:
        # A batch goes channels_last; a single image (a detector's input) stays as it is.
        return run_torch(images.contiguous(memory_format=memory_format) if images.dim() == 4 else images)

    return card, run, runtime


def predict_folder(
    paths: Sequence[Path],
    skipped: list[dict[str, str]],
    card: ModelCard,
    run_model: RunExported,
    adapter: Any,
    output_dir: Path,
    cfg: DictConfig,
) -> tuple[list[dict], list[dict[str, str]]]:
    """The adapter's records for every readable image of ``paths``, and ``skipped`` with the unreadable ones."""
    loader = DataLoader(
        ImageFiles(paths, card.transform()),
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        collate_fn=collate_readable,
    )
    records, skipped = [], list(skipped)
    for batch in loader:
        skipped += batch["skipped"]
        if batch["images"]:
            described = adapter.describe(card, adapter.run(run_model, batch["images"], card), batch["paths"], cfg)
            adapter.save_pictures(output_dir, card, described, batch["images"])
            records += described
    return records, skipped


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict every image under ``cfg.images`` with ``cfg.model``; returns what predictions.json holds."""
    if not cfg.images:
        raise ConfigError("images is required: images=/path/to/folder")
    paths, skipped = list_images(cfg.images)
    card, run_model, runtime = load_model(cfg.model, validation_crop(cfg), cfg.threads)
    adapter = adapter_of(task_class(card.family))
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    records, skipped = predict_folder(paths, skipped, card, run_model, adapter, output_dir, cfg)
    verification = None
    if cfg.compare_with:
        other_paths, other_skipped = list_images(cfg.compare_with)
        others, other_skipped = predict_folder(other_paths, other_skipped, card, run_model, adapter, output_dir, cfg)
        skipped += other_skipped
        verification = adapter.verify(output_dir, records, others, cfg.threshold)
    for entry in skipped:
        log.warning("skipped: %s", entry["error"])
    adapter.write_predictions(output_dir, card, records)
    result = {
        "model": str(cfg.model),
        "runtime": runtime,
        "task": card.task,
        "input_size": card.input_size,
        "images": str(cfg.images),
        "predictions": records,
        "skipped": skipped,
    }
    if verification is not None:
        result.update(compare_with=str(cfg.compare_with), threshold=cfg.threshold, verification=verification)
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
