"""Int8 post-training static quantization with ONNX Runtime, calibrated on the task's own images.

Weights become int8 with one scale per output channel, activations uint8 with ranges measured on calibration
images (min/max; uint8 activations with int8 weights are ONNX Runtime's fastest pair on x86). Only the
convolutions, their activations and the classifier are quantized: pooling, softmax and sigmoid stay float, so the
outputs keep their meaning. ONNX Runtime then runs every Conv with its ReLU6 as one QLinearConv.
``python -m mnet_tasks.export ckpt_path=... int8=true`` calls :func:`quantize_trained`, which also measures the
accuracy change on the validation split; the benchmark calls :func:`quantize_onnx` directly.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch.utils.data import DataLoader, Subset

from mnet_tasks.config import ConfigError
from mnet_tasks.data.bad_files import SkippingDataLoader
from mnet_tasks.data.transforms import is_uint8_image, normalize_images
from mnet_tasks.model_card import ModelCard
from mnet_tasks.onnx_io import INPUT_NAME, onnx_session, set_metadata
from mnet_tasks.trained import TrainedModel

# Quantizing the activations too lets ONNX Runtime fuse each Conv with its ReLU6 (Clip) or ReLU into one
# QLinearConv; left float, every layer would go back to float and forth (about 1.4x slower).
QUANTIZED_OPS = ["Conv", "Gemm", "Clip", "Relu"]


class BatchReader(CalibrationDataReader):
    """Calibration images for ONNX Runtime's quantizer, one batch per call."""

    def __init__(self, batches: Iterable[np.ndarray]):
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}


def quantize_onnx(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration_batches: Iterable[np.ndarray],
    quant_format: str = "qdq",
    per_channel: bool = True,
) -> Path:
    """Quantize an exported model, keeping its metadata (the model card)."""
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    if quant_format not in formats:
        raise ConfigError(f"quantization.format must be one of {', '.join(formats)}, got {quant_format!r}")
    with tempfile.TemporaryDirectory() as workdir:
        prepared = Path(workdir) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))  # shape inference and the clean-up the quantizer expects
        quantize_static(
            str(prepared),
            str(int8_path),
            BatchReader(calibration_batches),
            quant_format=formats[quant_format],
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=QUANTIZED_OPS,
        )
    metadata = {prop.key: prop.value for prop in onnx.load(str(fp32_path), load_external_data=False).metadata_props}
    if metadata:
        set_metadata(int8_path, metadata)
    return Path(int8_path)


def calibration_loader(
    datamodule: Any, card: ModelCard, images: int, batch_size: int, num_workers: int, seed: int
) -> DataLoader:
    """``images`` training images drawn at random (the split may be sorted by class), seen as in validation."""
    dataset = datamodule.build_dataset("train", card.transform())
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:images].tolist()
    return SkippingDataLoader(Subset(dataset, chosen), batch_size=batch_size, num_workers=num_workers)


def compare_accuracy(
    fp32_path: Path, int8_path: Path, loader: DataLoader, trained: TrainedModel, max_images: int | None
) -> dict[str, Any]:
    """The task's metric for both models on the validation images, and how often their decisions agree."""
    adapter, card = trained.adapter, trained.card
    sessions = {"fp32": onnx_session(fp32_path), "int8": onnx_session(int8_path)}
    output = card.probability_output(card.predict_head)
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in sessions}
    targets_seen: list[np.ndarray] = []
    seen = 0
    for batch in loader:
        images, targets = adapter.images_and_targets(batch, card)
        images = normalize_images(images, card.mean, card.std) if is_uint8_image(images) else images
        if max_images is not None:
            images, targets = images[: max_images - seen], targets[: max_images - seen]
        for name, session in sessions.items():
            outputs[name].append(session.run([output], {INPUT_NAME: images.numpy()})[0])
        targets_seen.append(targets)
        seen += len(images)
        if max_images is not None and seen >= max_images:
            break
    if not targets_seen:
        raise ValueError("no validation image to measure the int8 accuracy on (check data.root)")
    # Scored over the whole split at once: a metric such as pair verification is not a sum over batches.
    targets = np.concatenate(targets_seen)
    values = {name: np.concatenate(arrays) for name, arrays in outputs.items()}
    (fp32_total, scored), (int8_total, _) = (adapter.score(values[name], targets) for name in ("fp32", "int8"))
    if scored == 0:
        raise ValueError("no labelled validation image to measure the int8 accuracy on (check data.root)")
    fp32, int8 = fp32_total / scored, int8_total / scored
    same = adapter.decisions(values["fp32"]) == adapter.decisions(values["int8"])
    agreeing, decisions = int(same.sum()), same.size
    return {
        "split": "val",
        "metric": adapter.metric,
        "images": seen,
        "scored": scored,
        "fp32": fp32,
        "int8": int8,
        "change_points": 100 * (int8 - fp32),
        "agreement": agreeing / decisions,
    }


def quantize_trained(cfg: DictConfig, trained: TrainedModel, fp32_path: Path, int8_path: Path) -> dict[str, Any]:
    """Quantize the exported ``fp32_path`` calibrated on the task's training images, and compare both models on
    the validation split. ``cfg`` is the export config (``quantization.*``, ``data.*``)."""
    options = cfg.quantization
    card = trained.card
    with tempfile.TemporaryDirectory() as workdir:
        data_kwargs = trained.adapter.data_kwargs(trained.hparams, Path(workdir))
        datamodule = instantiate(cfg.data, image_size=card.input_size, **data_kwargs)
        datamodule.prepare_data()
        calibration = calibration_loader(
            datamodule, card, options.calibration_images, options.batch_size, cfg.data.num_workers, cfg.seed
        )
        batches = (trained.adapter.images_and_targets(batch, card)[0].numpy() for batch in calibration)
        quantize_onnx(fp32_path, int8_path, batches, options.format, options.per_channel)
        datamodule.setup("validate")
        accuracy = compare_accuracy(fp32_path, int8_path, datamodule.val_dataloader(), trained, options.eval_images)
    return {
        "model": str(int8_path),
        "format": options.format,
        "per_channel": options.per_channel,
        "calibration_images": len(calibration.dataset),
        "quantized_ops": QUANTIZED_OPS,
        "accuracy": accuracy,
    }
