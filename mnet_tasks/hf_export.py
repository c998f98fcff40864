"""``format=hf``: a classifier checkpoint as a timm / Hugging Face model folder (:func:`mnet_tasks.export.export`).

The folder holds what ``timm.create_model("local-dir:<folder>", pretrained=True)`` (or ``"hf-hub:<user>/<repo>"``
once uploaded) reads:

- ``config.json``: timm's hub config: ``architecture``, ``num_classes``, ``num_features``, ``label_names`` where
  known, ``model_args`` and ``pretrained_cfg`` (the input size, crop, interpolation, mean and std as trained);
- ``model.safetensors``: the weights in the architecture's own names, BatchNorm unfolded, to fine-tune further;
- ``README.md``: the model card (front matter for the Hub, metrics, dataset, cost, latency, the training command).

The architecture is timm's own ``mobilenetv1_100`` / ``mobilenetv1_125`` where the network is exactly that one
(width, activation, BatchNorm epsilon and every weight's name and shape compared), so that timm alone loads it;
any other network is the nearest ``mnet_mobilenet_v1_*`` (:mod:`mnet_tasks.backbone`) with the backbone config as
``model_args``, which needs ``import mnet_tasks`` to register it. Only a network that is one MobileNetV1 classifier
qualifies (:func:`hub_classifier`).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from safetensors.torch import save_file
from torch import nn

from mnet_tasks.adapter import TaskForward
from mnet_tasks.backbone import DepthwiseSeparable, MobileNetV1
from mnet_tasks.config import ConfigError
from mnet_tasks.cost import profile_model
from mnet_tasks.sweeps import read_record, run_command
from mnet_tasks.timing import cpu_name
from mnet_tasks.trained import TrainedModel
from mnet_tasks.weights import timm_named_state_dict

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
# The widths timm itself builds as MobileNetV1 (timm.models.efficientnet), with ReLU6 and BatchNorm eps 1e-5.
TIMM_ARCHITECTURES = {1.0: "mobilenetv1_100", 1.25: "mobilenetv1_125"}
OWN_VARIANTS = "mnet_mobilenet_v1_*"  # our timm registrations, named by width: mnet_mobilenet_v1_050 is alpha 0.5
# The validation resize's interpolation in timm's words: albumentations' linear resize (area when shrinking).
INTERPOLATION = "bilinear"


@dataclass(frozen=True)
class HubArchitecture:
    """A timm architecture name, the ``model_args`` that build the network under it, and the weights in its names."""

    name: str
    model_args: dict[str, Any]
    state_dict: dict[str, torch.Tensor]


def needs_mnet_tasks(architecture: str) -> bool:
    """Whether loading the architecture takes ``import mnet_tasks`` (our registration), not timm alone."""
    return architecture not in TIMM_ARCHITECTURES.values()


def hub_classifier(trained: TrainedModel) -> MobileNetV1:
    """The checkpoint's MobileNetV1 when the task's network is exactly that classifier: the module's ``backbone``
    with its classifier, one softmax head, and a forward that is the backbone's (checked on a random batch)."""
    module, card = trained.module, trained.card
    backbone = getattr(module, "backbone", None)
    reason = None
    if not isinstance(backbone, MobileNetV1) or backbone.features_only or backbone.num_classes == 0:
        reason = "its network is not a MobileNetV1 with its own classifier (module.backbone)"
    elif len(card.heads) != 1 or card.activation != "softmax":
        reason = f"it has {len(card.heads)} {card.activation} head(s), where a timm classifier has one softmax head"
    else:
        images = torch.randn(2, 3, card.input_size, card.input_size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            output = TaskForward(module)(images)
            if not (isinstance(output, torch.Tensor) and torch.equal(output, backbone(images))):
                reason = "its forward is not its MobileNetV1 classifier's (the output differs from module.backbone's)"
    if reason:
        raise ConfigError(f"format=hf writes a timm image classifier; the {card.task} model is not one: {reason}")
    return backbone


def computation(model: nn.Module) -> tuple[set[type], set[float]]:
    """What the weights' names and shapes do not show of a network: its activation types and BatchNorm epsilons."""
    activations = {type(layer) for layer in model.modules() if isinstance(layer, (nn.ReLU, nn.ReLU6))}
    epsilons = {layer.eps for layer in model.modules() if isinstance(layer, nn.BatchNorm2d)}
    return activations, epsilons


def tensor_shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Size]:
    return {key: tensor.shape for key, tensor in state_dict.items()}


def variant_alpha(name: str) -> float:
    return int(name.rsplit("_", 1)[1]) / 100


def hub_architecture(backbone: MobileNetV1, options: Mapping[str, Any]) -> HubArchitecture:
    """timm's own architecture when it is exactly ``backbone``; else our registered variant nearest in width, with
    the MobileNetV1 arguments of the backbone config ``options`` as ``model_args``."""
    name = TIMM_ARCHITECTURES.get(backbone.alpha)
    if name and all(isinstance(block, DepthwiseSeparable) for block in backbone.blocks):
        reference = timm.create_model(name, num_classes=backbone.num_classes)
        renamed = timm_named_state_dict(backbone)
        same_layers = tensor_shapes(renamed) == tensor_shapes(reference.state_dict())
        if same_layers and computation(backbone) == computation(reference):
            return HubArchitecture(name, {"drop_rate": backbone.drop_rate}, renamed)
    arguments = inspect.signature(MobileNetV1).parameters
    model_args = {key: value for key, value in options.items() if key in arguments}
    nearest = min(timm.list_models(OWN_VARIANTS), key=lambda variant: abs(variant_alpha(variant) - backbone.alpha))
    return HubArchitecture(nearest, model_args, backbone.state_dict())


def run_folder(ckpt_path: str | Path) -> Path | None:
    """The run folder of a checkpoint in its ``<run>/checkpoints/`` (None for a checkpoint moved elsewhere)."""
    path = Path(ckpt_path).expanduser().resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else None


def run_record(run: Path | None) -> dict[str, Any]:
    """The run's ``metrics.json`` record (empty without one)."""
    return (read_record(run) if run else None) or {}


def label_names(cfg: DictConfig, trained: TrainedModel, trained_on: str | None) -> list[str]:
    """The class names: the card's (a task that records them), else those of the data config's dataset (the task's
    data, or ``data.root=...``) where its files are there and it is the dataset the run trained on (``trained_on``,
    from metrics.json); none otherwise."""
    head = trained.card.heads[0]
    if head.labels:
        return list(head.labels)
    with tempfile.TemporaryDirectory() as workdir:
        try:
            data_kwargs = trained.adapter.data_kwargs(trained.hparams, Path(workdir))
            data = instantiate(cfg.data, image_size=trained.card.input_size, **data_kwargs)
            names, dataset = list(getattr(data, "class_names", [])), data.dataset_name
        except (InstantiationException, NotImplementedError, OSError) as error:
            log.warning("config.json gets no label_names: the data's class names cannot be read (%s)", error)
            return []
    if len(names) == head.num_outputs and trained_on in (None, dataset):
        return names
    log.warning(
        "config.json gets no label_names: the data config's dataset (%s, %d classes) is not the one the model was "
        "trained on (%s, %d classes); add data.root=<that dataset> to name the classes",
        dataset,
        len(names),
        trained_on or "not recorded",
        head.num_outputs,
    )
    return []


def hub_config(
    architecture: HubArchitecture, backbone: MobileNetV1, trained: TrainedModel, labels: Sequence[str], license_id: str
) -> dict[str, Any]:
    """timm's ``config.json``: the architecture, its arguments and the preprocessing the model was trained with."""
    card, size = trained.card, trained.card.input_size
    defaults = timm.models.get_pretrained_cfg(architecture.name)
    pool = math.ceil(size / backbone.feature_info[-1]["reduction"])
    config: dict[str, Any] = {
        "architecture": architecture.name,
        "num_classes": backbone.num_classes,
        "num_features": backbone.num_features,
        "global_pool": "avg",
    }
    if labels:
        config["label_names"] = list(labels)
    if architecture.model_args:
        config["model_args"] = architecture.model_args
    config["pretrained_cfg"] = {
        "input_size": [3, size, size],
        "fixed_input_size": False,
        "interpolation": INTERPOLATION,
        "crop_pct": card.crop_pct,
        "crop_mode": "center",
        "mean": list(card.mean),
        "std": list(card.std),
        "num_classes": backbone.num_classes,
        "pool_size": [pool, pool],
        "first_conv": defaults.first_conv,
        "classifier": defaults.classifier,
        "license": license_id,
    }
    return config


def write_hub_folder(cfg: DictConfig, trained: TrainedModel, backbone: MobileNetV1, folder: Path) -> nn.Module:
    """``config.json`` and ``model.safetensors`` in ``folder``; returns the model timm loads from them."""
    architecture = hub_architecture(backbone, trained.hparams["backbone"])
    labels = label_names(cfg, trained, run_record(run_folder(cfg.ckpt_path)).get("dataset"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CARD_FILE).unlink(missing_ok=True)  # written once the folder passes the parity check
    config = hub_config(architecture, backbone, trained, labels, cfg.hf.license)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file({key: tensor.contiguous() for key, tensor in architecture.state_dict.items()}, str(folder / WEIGHTS_FILE))
    return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()


def median_latency_ms(model: nn.Module, input_size: int, batches: Sequence[int], runs: int) -> dict[int, float]:
    """Median milliseconds of one forward pass per batch size, eager PyTorch fp32 on this CPU, after a warm-up."""
    latency = {}
    with torch.inference_mode():
        for batch in batches:
            images = torch.randn(batch, 3, input_size, input_size)
            model(images)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                model(images)
                times.append(time.perf_counter() - start)
            latency[int(batch)] = 1000 * statistics.median(times)
    return latency


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]


def metrics_section(record: Mapping[str, Any]) -> list[str]:
    """The final and best validation metrics of the run's metrics.json."""
    metrics = record.get("metrics") or {}
    final, best = metrics.get("final") or {}, metrics.get("best") or {}
    if not final:
        return ["No `metrics.json` beside the checkpoint (`<run>/metrics.json`): no metrics recorded."]
    lines = [
        f"Validation split of {record.get('dataset')}, {record.get('epochs')} training epoch(s); the primary metric is "
        f"`{record.get('monitor')}` ({record.get('monitor_mode')} is better).",
        "",
    ]
    best_header = f"best (epoch {record.get('best_epoch')})"
    rows = [(f"`{name}`", f"{value:.4f}", f"{best[name]:.4f}" if name in best else "") for name, value in final.items()]
    return lines + markdown_table(("metric", "final", best_header), sorted(rows))


def model_card_text(
    config: Mapping[str, Any],
    trained: TrainedModel,
    record: Mapping[str, Any],
    madds: int,
    params: int,
    latency_ms: Mapping[int, float],
    runs: int,
    command: str | None,
    parity: Mapping[str, Any],
) -> str:
    """README.md: Hugging Face front matter, then what the model is, how well it does, what it costs and how to
    load, train and share it."""
    card, pretrained_cfg = trained.card, config["pretrained_cfg"]
    size, alpha, architecture = card.input_size, card.alpha, config["architecture"]
    dataset = record.get("dataset")
    if needs_mnet_tasks(architecture):
        built_by = (
            f"timm architecture `{architecture}` with `model_args` `{json.dumps(config.get('model_args', {}))}`: "
            "mnet_tasks registers it, so `pip install mnet_tasks` and `import mnet_tasks` before loading it."
        )
    else:
        built_by = f"timm architecture `{architecture}`, timm's own MobileNetV1: timm alone loads it."
    labels = config.get("label_names") or []
    named = ", ".join(f"`{label}`" for label in labels[:20]) + (
        f" ... ({len(labels)} in all)" if len(labels) > 20 else ""
    )
    rescaled = round(size / pretrained_cfg["crop_pct"])
    load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "unknown"
    differences = ", ".join(f"{name} {value:.1e}" for name, value in parity["max_abs_diff"].items())
    lines = [
        "---",
        "library_name: timm",
        f"license: {pretrained_cfg['license']}",
        "pipeline_tag: image-classification",
        "tags:",
        *(f"- {tag}" for tag in ("image-classification", "timm", "mobilenet", "mnet_tasks")),
        "---",
        "",
        f"# MobileNetV1 α={alpha} {size}px: {card.task} on {dataset or 'unrecorded data'}",
        "",
        f"MobileNetV1 ([Howard et al., 2017](https://arxiv.org/abs/1704.04861)) with width multiplier α = {alpha}, "
        f"taking {size}×{size} images, trained with mnet_tasks for {card.task} on "
        f"{dataset or 'data not recorded (no metrics.json beside the checkpoint)'}: "
        f"{config['num_classes']} classes. {built_by}",
        "",
        "## Results",
        "",
        *metrics_section(record),
        "",
        "## Cost",
        "",
        *markdown_table(
            ("input", "multiply-adds", "parameters"),
            [(f"{size}×{size}", f"{madds / 1e6:.1f} M", f"{params / 1e6:.3f} M")],
        ),
        "",
        "## Latency",
        "",
        f"Eager PyTorch {torch.__version__}, float32, on {cpu_name()} with {torch.get_num_threads()} threads: the "
        f"median of {runs} runs after a warm-up, measured when the model was exported (load average {load}: other "
        "work on the machine slows it).",
        "",
        *markdown_table(
            ("batch", "ms per batch", "ms per image"),
            [(batch, f"{ms:.1f}", f"{ms / batch:.2f}") for batch, ms in latency_ms.items()],
        ),
        "",
        "## Preprocessing and labels",
        "",
        f"Resize the shorter side to {rescaled} px ({pretrained_cfg['interpolation']}), centre-crop {size}×{size}, "
        f"scale to [0, 1] and normalise by mean {pretrained_cfg['mean']} and std {pretrained_cfg['std']}: "
        "`pretrained_cfg` in config.json, which `timm.data.resolve_data_config` reads.",
        "",
        f"Classes, in output order: {named}." if labels else "config.json names no classes: outputs are class indices.",
        "",
        "## Use",
        "",
        "```python",
        "import timm",
        "import torch",
        *(
            ["import mnet_tasks  # registers the mnet_mobilenet_v1_* architectures"]
            if needs_mnet_tasks(architecture)
            else []
        ),
        "",
        'model = timm.create_model("hf-hub:<user>/<repo>", pretrained=True).eval()  # or "local-dir:<this folder>"',
        "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))",
        "with torch.inference_mode():",
        "    probabilities = model(transform(image).unsqueeze(0)).softmax(-1)  # image: a PIL RGB image",
        "```",
        "",
        "The weights keep BatchNorm unfolded: the model fine-tunes as it is (`num_classes=K` gives a new classifier).",
        "",
        "## Training",
        "",
        *(["```bash", command, "```"] if command else ["The command was not recorded (no `.hydra/overrides.yaml`)."]),
        "",
        "## Share",
        "",
        "```bash",
        "hf upload <user>/<repo> <this folder> .",
        "```",
        "",
        'or in Python `huggingface_hub.upload_folder(repo_id="<user>/<repo>", folder_path="<this folder>")` '
        "(the repository made first with `huggingface_hub.create_repo`).",
        "",
        "## Export check",
        "",
        f"Exported by `python -m mnet_tasks.export format=hf` (mnet_tasks {record.get('commit', 'version unknown')}): "
        f"this folder, loaded by timm, reproduces the checkpoint's outputs on {parity['batch_size']} random images "
        f"to a max abs difference of {differences}.",
    ]
    return "\n".join(lines) + "\n"


def write_model_card(
    cfg: DictConfig, trained: TrainedModel, backbone: MobileNetV1, folder: Path, model: nn.Module, parity: Mapping
) -> dict[str, Any]:
    """README.md in ``folder`` (its cost, the latency of ``model``, the run's metrics and command); returns what
    the export report records of the folder."""
    config = json.loads((folder / CONFIG_FILE).read_text())
    run = run_folder(cfg.ckpt_path)
    cost = profile_model(backbone, trained.card.input_size)
    latency = median_latency_ms(model, trained.card.input_size, cfg.hf.latency_batches, cfg.hf.latency_runs)
    text = model_card_text(
        config,
        trained,
        run_record(run),
        cost.madds,
        cost.params,
        latency,
        cfg.hf.latency_runs,
        run_command(run) if run else None,
        parity,
    )
    (folder / CARD_FILE).write_text(text)
    return {
        "architecture": config["architecture"],
        "needs_mnet_tasks": needs_mnet_tasks(config["architecture"]),
        "label_names": len(config.get("label_names", [])),
        "latency_ms": latency,
        "card": str(folder / CARD_FILE),
    }
