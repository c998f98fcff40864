"""Export a trained checkpoint for deployment, with a parity check against PyTorch.

``python -m mnet_tasks.export ckpt_path=<checkpoint> [format=onnx|torchscript|hf] [int8=true] [overrides]`` rebuilds
the network of the task class the checkpoint records from its saved hyper-parameters, folds BatchNorm into the
convolutions and writes, beside the checkpoint in ``export/`` (or ``output_dir``):

- ``<name>.onnx`` (ONNX Runtime) or ``<name>.pt`` (TorchScript), with the model card (preprocessing, outputs
  and their labels) in its metadata. Classifier heads (classification, fine-grained, attributes,
  geolocalization): input ``images`` ``(N, 3, S, S)`` with a dynamic batch size, the logits and probabilities of
  every head out. Detection (ONNX): one image of any size in, boxes, labels and scores out, NMS in the graph
  (its task's adapter);
- ``<name>.safetensors``: the weights as trained (loadable as ``backbone.pretrained``), the card in its header;
- ``<name>_hf/`` with ``format=hf``, instead of the model and weights above: a timm / Hugging Face model folder
  (``config.json``, ``model.safetensors`` with BatchNorm unfolded, a ``README.md`` model card) that
  ``timm.create_model("local-dir:<folder>", pretrained=True)`` loads, for a network that is one MobileNetV1
  classifier (classification, fine-grained); see :mod:`mnet_tasks.hf_export`;
- ``<name>.int8.onnx`` with ``int8=true``: ONNX Runtime static quantization (:mod:`mnet_tasks.quantize`);
- ``<name>.export.json`` (``<name>_hf.export.json``): what was written, the parity check (max abs difference of
  every output between the checkpoint in PyTorch and the exported model, on random images at another batch size
  than the traced one; for detection, the differences of paired detections on images of several sizes; for hf,
  the folder as timm loads it) and, with int8, the accuracy change on the validation split.

The data config (``data.*``, the task's data by default) gives the preprocessing, the int8 calibration images and,
for hf, the class names where the checkpoint does not record them.

Command line: Hydra overrides on ``conf/export.yaml``, composed in-process rather than by ``@hydra.main``: the
checkpoint's task config is chosen before the user's overrides (``compose_for_checkpoint``), and no run folder is
made.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from safetensors.torch import save_file
from torch import nn

from mnet_tasks.adapter import RunExported
from mnet_tasks.config import ConfigError
from mnet_tasks.hf_export import WEIGHTS_FILE, hub_classifier, write_hub_folder, write_model_card
from mnet_tasks.model_card import CARD_KEY, ModelCard
from mnet_tasks.onnx_io import TRACED_BATCH, onnx_call, onnx_session
from mnet_tasks.trained import TrainedModel, compose_for_checkpoint, load_trained, validation_crop

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "hf": "_hf"}  # what the model's name adds to the checkpoint's
TORCHSCRIPT_CARD_FILE = f"{CARD_KEY}.json"


def export_torchscript(network: nn.Module, path: str | Path, input_size: int, card: ModelCard) -> Path:
    """Trace and freeze (constants folded); the card goes in the archive as an extra file."""
    example = torch.randn(TRACED_BATCH, 3, input_size, input_size)
    with torch.no_grad(), warnings.catch_warnings():
        # The input-size check reads the (fixed) shape: the tracer's warning about it holds no news.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        frozen = torch.jit.freeze(torch.jit.trace(network.eval(), example))
    torch.jit.save(frozen, str(path), _extra_files={TORCHSCRIPT_CARD_FILE: card.to_json()})
    return Path(path)


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, ModelCard]:
    files = {TORCHSCRIPT_CARD_FILE: ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    if not files[TORCHSCRIPT_CARD_FILE]:
        raise ValueError(f"{path} carries no {CARD_KEY} model card: export it with python -m mnet_tasks.export")
    return module, ModelCard.from_json(files[TORCHSCRIPT_CARD_FILE], path)


def save_weights(trained: TrainedModel, path: str | Path) -> Path:
    """The task module's weights as trained, in safetensors (no code, no pickle), with the card in the header."""
    tensors = {name: tensor.contiguous() for name, tensor in trained.module.state_dict().items()}
    save_file(tensors, str(path), metadata={CARD_KEY: trained.card.to_json()})
    return Path(path)


def torch_call(network: nn.Module) -> RunExported:
    """A PyTorch network as a runtime runs it: outputs as arrays, no autograd."""

    def call(images: torch.Tensor) -> list[np.ndarray]:
        with torch.inference_mode():
            return [output.numpy() for output in network(images)]

    return call


def parity(trained: TrainedModel, run_exported: RunExported, count: int) -> dict[str, float]:
    """The adapter's differences (max abs difference of every output for classifier heads) between the checkpoint
    as trained, in PyTorch, and the exported model, on the same random inputs."""
    adapter, card = trained.adapter, trained.card
    images = adapter.example_images(card, count)
    expected = adapter.run(torch_call(trained.reference()), images, card)
    return adapter.compare(expected, adapter.run(run_exported, images, card))


def default_output_dir(ckpt_path: str | Path) -> Path:
    return Path(ckpt_path).expanduser().parent / "export"


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` as configured (conf/export.yaml) and return the report written beside it."""
    if cfg.format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    if cfg.int8 and cfg.format != "onnx":
        raise ConfigError("int8=true quantizes the ONNX model: use format=onnx")
    trained = load_trained(cfg.ckpt_path, validation_crop(cfg))
    card, adapter = trained.card, trained.adapter
    if cfg.format == "hf":
        backbone = hub_classifier(trained)  # the network is one timm classifier, or a ConfigError says why not
    elif cfg.format not in adapter.formats:
        raise ConfigError(f"format={cfg.format}: a {card.task} model exports to {', '.join(adapter.formats)}")
    if cfg.int8 and not adapter.supports_int8:
        raise ConfigError(f"int8=true: int8 quantization does not cover {card.task} models yet")
    output_dir = Path(cfg.output_dir) if cfg.output_dir else default_output_dir(cfg.ckpt_path)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(cfg.ckpt_path).stem
    model_path = output_dir / f"{stem}{FORMATS[cfg.format]}"

    if cfg.format == "hf":
        hub_model = write_hub_folder(cfg, trained, backbone, model_path)
        run_exported = torch_call(adapter.inference_network(hub_model, card))
        weights_path = model_path / WEIGHTS_FILE
    else:
        network = trained.network()
        if cfg.format == "onnx":
            adapter.export_onnx(network, model_path, card.input_size, card)
            run_exported = onnx_call(onnx_session(model_path))
        else:
            export_torchscript(network, model_path, card.input_size, card)
            run_exported = torch_call(load_torchscript(model_path)[0])
        weights_path = save_weights(trained, output_dir / f"{stem}.safetensors")

    differences = parity(trained, run_exported, cfg.parity.batch_size)
    defaults = {name: adapter.parity_atol.get(name, cfg.parity.atol) for name in differences}
    tolerances = {name: cfg.parity.atol_for.get(name, defaults[name]) for name in differences}
    report: dict[str, Any] = {
        "checkpoint": str(cfg.ckpt_path),
        "format": cfg.format,
        "model": str(model_path),
        "weights": str(weights_path),
        "card": json.loads(card.to_json()),
        "parity": {
            "reference": "the checkpoint in PyTorch (BatchNorm unfolded, NCHW)",
            "batch_size": cfg.parity.batch_size,
            "max_abs_diff": differences,
            "atol": tolerances,
            "passed": all(differences[name] <= tolerances[name] for name in differences),
        },
    }
    report_path = output_dir / f"{model_path.stem}.export.json"
    if report["parity"]["passed"] and cfg.format == "hf":
        report["hf"] = write_model_card(cfg, trained, backbone, model_path, hub_model, report["parity"])
    if report["parity"]["passed"] and cfg.int8:
        from mnet_tasks.quantize import quantize_trained

        report["int8"] = quantize_trained(cfg, trained, model_path, output_dir / f"{stem}.int8.onnx")
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    if not report["parity"]["passed"]:
        raise RuntimeError(
            f"{model_path} does not reproduce the checkpoint: max abs differences {differences} exceed "
            f"the parity tolerances {tolerances} (report: {report_path})"
        )
    return report


def summary(report: dict[str, Any]) -> str:
    differences = ", ".join(f"{name} {diff:.1e}" for name, diff in report["parity"]["max_abs_diff"].items())
    lines = [
        f"exported {report['checkpoint']}",
        f"  {report['format']}: {report['model']}",
        f"  weights: {report['weights']}",
        f"  parity with PyTorch at batch {report['parity']['batch_size']}, max abs diff: {differences}",
    ]
    if hf := report.get("hf"):
        loading = "with import mnet_tasks first" if hf["needs_mnet_tasks"] else "with timm alone"
        lines.append(
            f"  timm architecture {hf['architecture']}, loaded {loading}: "
            f'timm.create_model("local-dir:{report["model"]}", pretrained=True)'
        )
    if int8 := report.get("int8"):
        accuracy = int8["accuracy"]
        lines += [
            f"  int8: {int8['model']}",
            f"    {accuracy['metric']} on {accuracy['images']} validation images: fp32 {accuracy['fp32']:.4f}, "
            f"int8 {accuracy['int8']:.4f} ({accuracy['change_points']:+.2f} points); "
            f"same decision {100 * accuracy['agreement']:.1f}%",
        ]
    return "\n".join(lines)


def main(overrides: list[str]) -> None:
    cfg = compose_for_checkpoint("export", overrides, "ckpt_path")
    print(summary(export(cfg)))


if __name__ == "__main__":
    main(sys.argv[1:])
