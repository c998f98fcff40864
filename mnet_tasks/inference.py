"""A trained model made ready for inference, shared by export, predict and int8 quantization.

A checkpoint is rebuilt into the task class it records (looked up in the task registry, never from a
``_target_`` it names) from its own saved hyper-parameters, read with ``weights_only=True``. What a user of the
exported model needs to know (the input and its preprocessing, the outputs and what each of their columns means)
travels with it as a :class:`ModelCard`: in the ONNX metadata, the TorchScript extra files and the safetensors
header. How a task's model is exported, run and read is its :class:`TaskFamily`, which the task class names.
"""

from __future__ import annotations

import copy
import csv
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from omegaconf import DictConfig
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mnet_tasks.backbone import ConvBnAct, MobileNetV1
from mnet_tasks.config import ConfigError, compose_config, load_checkpoint, resolve_input_size
from mnet_tasks.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from mnet_tasks.registry import CHECKPOINT_KEY, RegistryError, task_class
from mnet_tasks.tasks.base import TaskModule

CARD_KEY = "mnet_tasks"  # the metadata key (ONNX, safetensors) or extra file stem (TorchScript) of the card
PRESENT_THRESHOLD = 0.5  # an attribute is predicted present at this probability

# A model as a runtime runs it: its input tensor in, its outputs in the card's order out.
RunExported = Callable[[torch.Tensor], Sequence[np.ndarray]]


@dataclass(frozen=True)
class Head:
    """One output of the model: ``num_outputs`` scores, named by ``labels`` (attribute names, cell tokens, object
    categories) or by their index when ``labels`` is empty; ``ids`` are the dataset's ids of the outputs (COCO
    category ids); a geolocation head also has each cell's centroid (latitude, longitude)."""

    name: str
    num_outputs: int
    labels: list[str] = field(default_factory=list)
    centroids: list[list[float]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ModelCard:
    """What running the model needs: the preprocessing and how to read its outputs.

    ``preprocess`` is ``center_crop`` (resize the shorter side to ``input_size / crop_pct``, centre-crop
    ``input_size``, normalise by ``mean``/``std``; the model takes ``images`` ``(N, 3, input_size, input_size)``
    float32) or ``image`` (the image as it is, ``(3, H, W)`` float32 in ``[0, 1]``: the model resizes and
    normalises it itself). ``outputs`` are the model's outputs in order; ``family`` is the registered task class.
    """

    task: str
    family: str
    alpha: float
    input_size: int
    crop_pct: float
    heads: list[Head]
    predict_head: str
    outputs: list[str]
    activation: str
    preprocess: str = "center_crop"
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))

    @property
    def output_names(self) -> list[str]:
        return list(self.outputs)

    def head(self, name: str) -> Head:
        return next(head for head in self.heads if head.name == name)

    def probability_output(self, head_name: str) -> str:
        return self.output_names[2 * [head.name for head in self.heads].index(head_name) + 1]

    def transform(self) -> A.Compose:
        """From an ``HxWx3`` uint8 image to what the model takes (``preprocess``)."""
        if self.preprocess == "image":
            return A.Compose([A.ToFloat(max_value=255.0), ToTensorV2()])
        return eval_transform(self.input_size, self.crop_pct, self.mean, self.std)

    def task_family(self) -> TaskFamily:
        return family_of(task_class(self.family))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, source: str | Path) -> ModelCard:
        try:
            values = json.loads(text)
            values["heads"] = [Head(**head) for head in values["heads"]]
            return cls(**values)
        except (TypeError, KeyError, ValueError) as error:
            raise ValueError(f"{source}: its {CARD_KEY} model card cannot be read ({error})") from error


class TaskFamily:
    """How a kind of task is rebuilt from a checkpoint, exported, run and read: here for a network of
    classifier heads (logits and probabilities per head), which a task class uses unless it names another.

    Predictions of a softmax head name the top class (and its centroid for a geolocation head) and the top k;
    those of a sigmoid head give every label's probability and the labels present.
    """

    activation = "softmax"
    metric = "top1"  # what the int8 accuracy check reports on the validation split
    preprocess = "center_crop"
    supports_int8 = True
    formats = ("onnx", "torchscript")

    def rebuild_kwargs(self, cls: type[TaskModule], hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments from the saved hyper-parameters: no pretrained source (the weights come from the
        checkpoint), and nothing the constructor does not take."""
        accepted = inspect.signature(cls.__init__).parameters
        kwargs = {key: value for key, value in hparams.items() if key in accepted}
        kwargs["backbone"] = {**hparams["backbone"], "pretrained": None}
        return kwargs

    def network(self, module: TaskModule) -> nn.Module:
        """What is exported: here the task module's own forward (logits, or a dict of logits per head)."""
        return TaskForward(module)

    def heads(self, hparams: Mapping[str, Any]) -> list[Head]:
        return [Head("classes", int(hparams["num_classes"]))]

    def predict_head(self, hparams: Mapping[str, Any]) -> str:
        return self.heads(hparams)[0].name

    def output_names(self, heads: Sequence[Head]) -> list[str]:
        """``logits``, ``probabilities`` for one head; ``logits_<head>``, ``probabilities_<head>`` for several."""
        if len(heads) == 1:
            return ["logits", "probabilities"]
        return [f"{kind}_{head.name}" for head in heads for kind in ("logits", "probabilities")]

    def inference_network(self, network: nn.Module, card: ModelCard | None) -> nn.Module:
        """``network`` returning a flat tuple in ``card.outputs`` order, what ONNX and TorchScript carry (without a
        card: as it is, one logits tensor)."""
        if card is None:
            return network
        return InferenceNetwork(network, [head.name for head in card.heads], card.activation)

    def example_images(self, card: ModelCard, count: int, seed: int = 0) -> list[torch.Tensor]:
        """Random model inputs (parity checks, benchmarks)."""
        generator = torch.Generator().manual_seed(seed)
        return list(torch.randn(count, 3, card.input_size, card.input_size, generator=generator))

    def run(self, call: RunExported, images: Sequence[torch.Tensor], card: ModelCard) -> dict[str, np.ndarray]:
        """Every named output for ``images``, run as one batch."""
        return dict(zip(card.output_names, call(torch.stack(list(images))), strict=True))

    def compare(self, expected: Mapping[str, Any], got: Mapping[str, Any]) -> dict[str, float]:
        """Max abs difference of every output."""
        return {name: float(np.abs(np.asarray(expected[name]) - np.asarray(got[name])).max()) for name in expected}

    def export_onnx(self, network: nn.Module, path: Path, input_size: int, card: ModelCard | None = None) -> Path:
        from mnet_tasks.export import export_onnx

        return export_onnx(network, path, input_size, card.output_names if card else ["logits"], card)

    # The benchmark (python -m mnet_tasks.bench --task NAME): the task's network at each α and input size, with
    # random weights, beside reference networks (the first is the anchor the latency ratios divide by).
    bench_runtimes: tuple[str, ...] = ("eager_nchw", "eager_channels_last", "onnxruntime_fp32", "onnxruntime_int8")
    bench_throughput_batch = 32
    bench_native_size = 224  # the input size at ρ=1

    def bench_anchors(self) -> dict[str, Callable[[], nn.Module]]:
        import timm
        from torchvision.models import mobilenet_v2, mobilenet_v3_large

        return {
            "timm_mobilenetv1_100": lambda: timm.create_model("mobilenetv1_100"),
            "torchvision_mobilenet_v2": lambda: mobilenet_v2(weights=None),
            "torchvision_mobilenet_v3_large": lambda: mobilenet_v3_large(weights=None),
        }

    def bench_name(self, alpha: float, size: int) -> str:
        return f"mnet_tasks MobileNetV1 a={alpha}"

    def bench_model(self, alpha: float, size: int) -> nn.Module:
        """Our network as the bench times it: here the ImageNet MobileNetV1."""
        return MobileNetV1(alpha=alpha)

    def bench_input(self, size: int, batch: int) -> torch.Tensor:
        return torch.randn(batch, 3, size, size)

    def exported_input(self, images: torch.Tensor) -> torch.Tensor:
        """What the exported network (:meth:`inference_network`, as predict and export run it) takes of a
        :meth:`bench_input` batch."""
        return images

    def data_kwargs(self, hparams: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
        """Arguments the DataModule needs to label the data as the checkpoint does."""
        return {}

    def images_and_targets(self, batch: Any, card: ModelCard) -> tuple[torch.Tensor, np.ndarray]:
        """A validation batch's images and what ``score`` compares the predicted head's probabilities with."""
        images, labels = batch
        return images, labels.numpy()

    def score(self, probabilities: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
        """The metric summed over the scored items, and their number."""
        return float((probabilities.argmax(1) == targets).sum()), len(targets)

    def decisions(self, probabilities: np.ndarray) -> np.ndarray:
        """What a prediction decides (the top class, or each attribute's presence): compared between models."""
        return probabilities.argmax(1)

    def describe(self, card: ModelCard, outputs: Mapping[str, Any], paths: Sequence[str], options: Any) -> list[dict]:
        """One record per image, read from the predicted head's probabilities (``options``: the predict config,
        here its ``top_k``)."""
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
            ranked = np.argsort(-row, kind="stable")[: options.top_k]
            record = {"image": path, "label": names[ranked[0]], "probability": float(row[ranked[0]])}
            if head.centroids:
                record["latitude"], record["longitude"] = head.centroids[ranked[0]]
            record["top_k"] = [{"label": names[i], "probability": float(row[i])} for i in ranked]
            records.append(record)
        return records

    def save_pictures(self, output_dir: Path, card: ModelCard, records: list[dict], images: list[torch.Tensor]) -> None:
        """Pictures of a batch's predictions, where they say more than the table (none here)."""

    def write_predictions(self, output_dir: Path, card: ModelCard, records: list[dict]) -> None:
        """``predictions.csv``. Attributes: one probability column per attribute; classes and cells: the top one,
        and the top k as ``label:probability`` pairs separated by spaces."""
        with open(output_dir / "predictions.csv", "w", newline="") as file:
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


class ClassificationFamily(TaskFamily):
    """Classification and fine-grained recognition: one softmax head over the classes."""


class AttributesFamily(TaskFamily):
    """Face attributes: one sigmoid head, a probability per named attribute."""

    activation = "sigmoid"
    metric = "mean_accuracy"  # over attributes, at probability 0.5, as val/mean_accuracy

    def rebuild_kwargs(self, cls: type[TaskModule], hparams: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().rebuild_kwargs(cls, hparams), "teacher": None}  # the teacher only mattered for training

    def heads(self, hparams: Mapping[str, Any]) -> list[Head]:
        names = list(hparams["attribute_names"])
        return [Head("attributes", len(names), labels=names)]

    def images_and_targets(self, batch: Any, card: ModelCard) -> tuple[torch.Tensor, np.ndarray]:
        targets = batch["target"].numpy().copy()
        targets[~batch["labeled"].numpy()] = np.nan  # unlabeled images are not scored
        return batch["image"], targets

    def score(self, probabilities: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
        labeled = ~np.isnan(targets).any(1)
        correct = (probabilities[labeled] >= PRESENT_THRESHOLD) == (targets[labeled] == 1)
        return float(correct.mean(1).sum()), int(labeled.sum())

    def decisions(self, probabilities: np.ndarray) -> np.ndarray:
        return probabilities >= PRESENT_THRESHOLD


class GeolocalizationFamily(TaskFamily):
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
        from mnet_tasks.geo.cells import Partition, write_partitions

        partitions = [Partition.from_hparams(p) for p in hparams["partitions"]]
        return {"partition_file": str(write_partitions(workdir / "cells.csv", partitions)), "output_dir": None}

    def images_and_targets(self, batch: Any, card: ModelCard) -> tuple[torch.Tensor, np.ndarray]:
        images, _, labels = batch  # one column of cell labels per head, in head order
        column = [head.name for head in card.heads].index(card.predict_head)
        return images, labels[:, column].numpy()

    def score(self, probabilities: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
        inside = targets >= 0
        return float((probabilities[inside].argmax(1) == targets[inside]).sum()), int(inside.sum())


class TaskForward(nn.Module):
    """A task module's ``forward`` over its submodules alone, what tracing and export need (a LightningModule's
    properties reach for a Trainer). The task's forward may use its submodules only."""

    def __init__(self, module: TaskModule):
        super().__init__()
        self.task_forward = type(module).forward
        for name, child in module.named_children():
            self.add_module(name, child)

    def forward(self, images: torch.Tensor) -> Any:
        return self.task_forward(self, images)


def family_of(cls: type[TaskModule]) -> TaskFamily:
    """The family a task class names (``TaskModule.family``); classifier heads by default."""
    return cls.family or ClassificationFamily()


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """The saved hyper-parameters, state_dict and registered task name of a Lightning checkpoint of this
    project, read with ``weights_only=True`` and refused if its hyper-parameters name an untrusted target."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    payload = load_checkpoint(path, "checkpoint")
    if not isinstance(payload, dict) or not {"state_dict", "hyper_parameters"} <= payload.keys():
        raise ValueError(f"{path} is not a checkpoint of this project (no state_dict and hyper_parameters)")
    task = (payload.get(CHECKPOINT_KEY) or {}).get("task_class")
    if not task:
        raise ValueError(f"{path} does not name its task class (a checkpoint saved outside a registered task)")
    return dict(payload["hyper_parameters"]), payload["state_dict"], task


@dataclass
class TrainedModel:
    """A task module as trained (eval mode, the checkpoint's weights), its family and card."""

    module: TaskModule
    family: TaskFamily
    card: ModelCard
    hparams: dict[str, Any]

    def network(self) -> nn.Module:
        """A copy ready to run and to export, with flat outputs in the card's order and BN folded into the
        convolutions."""
        network = fold_batchnorm(self.family.network(copy.deepcopy(self.module)))
        return self.family.inference_network(network, self.card).eval()

    def reference(self) -> nn.Module:
        """The task module's own forward as trained (BN unfolded): what every export is checked against."""
        return self.family.inference_network(self.family.network(self.module), self.card).eval()


def validation_crop(cfg: DictConfig) -> float:
    """The data's validation ``crop_pct`` (1: none, for data without one, e.g. detection's)."""
    return float(cfg.data.get("crop_pct", 1.0))


def load_trained(path: str | Path, crop_pct: float) -> TrainedModel:
    """Rebuild a checkpoint's task module from its hyper-parameters; ``crop_pct`` is its data's validation crop."""
    hparams, state_dict, task = read_checkpoint(path)
    try:
        cls = task_class(task)
    except RegistryError as error:
        raise ValueError(f"{path}: {error}") from error
    family = family_of(cls)
    try:
        module = cls(**family.rebuild_kwargs(cls, hparams))
        module.load_state_dict(state_dict)
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        raise ValueError(f"{path}: the {task} task cannot be rebuilt from its checkpoint ({error})") from error
    backbone = hparams["backbone"]
    heads = family.heads(hparams)
    card = ModelCard(
        task=hparams.get("name", task),
        family=task,
        alpha=float(backbone["alpha"]),
        input_size=resolve_input_size(
            hparams["native_resolution"], backbone.get("rho", 1.0), backbone.get("resolution")
        ),
        crop_pct=float(crop_pct),
        heads=heads,
        predict_head=family.predict_head(hparams),
        outputs=family.output_names(heads),
        activation=family.activation,
        preprocess=family.preprocess,
    )
    return TrainedModel(module.eval(), family, card, hparams)


class InferenceNetwork(nn.Module):
    """A classifier-heads network returning a flat tuple in :attr:`ModelCard.output_names` order: per head,
    logits then probabilities. One tensor per output is what ONNX and TorchScript carry best."""

    def __init__(self, network: nn.Module, head_names: Sequence[str], activation: str):
        super().__init__()
        self.network = network
        self.head_names = list(head_names)
        self.activation = activation

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.network(images)
        if isinstance(outputs, torch.Tensor):
            outputs = {self.head_names[0]: outputs}
        flat = []
        for name in self.head_names:
            logits = outputs[name]
            flat += [logits, torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, 1)]
        return tuple(flat)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every MobileNetV1 layer's BatchNorm into its convolution (in place, eval mode): one op less per layer
    for eager PyTorch, and the same arithmetic ONNX Runtime would do."""
    model.eval()
    for layer in model.modules():
        if isinstance(layer, ConvBnAct) and isinstance(layer.bn, nn.BatchNorm2d):
            layer.conv = fuse_conv_bn_eval(layer.conv, layer.bn)
            layer.bn = nn.Identity()
    return model


def compose_for_checkpoint(config_name: str, overrides: Sequence[str], key: str) -> DictConfig:
    """Compose ``config_name``; when the override of config key ``key`` names a checkpoint, its task config
    (the saved ``task.name``) is chosen before the user's overrides (so that ``data`` is its task's data), unless
    they choose ``task`` themselves."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = {override.key_or_group: override for override in OverridesParser.create().parse_overrides(overrides)}
    if key not in parsed or parsed[key].value() is None:
        raise ConfigError(f"{key} is required: {key}=/path/to/model")
    path = str(parsed[key].value())
    if "task" in parsed or Path(path).suffix != ".ckpt":
        return compose_config(overrides, config_name)
    hparams, _, task = read_checkpoint(path)
    return compose_config([f"task={hparams.get('name', task)}", *overrides], config_name)
