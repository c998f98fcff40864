"""A trained model made ready for inference, shared by export, predict and int8 quantization.

A checkpoint is rebuilt from its own saved hyper-parameters into one of a fixed set of task classes, never from a
``_target_`` it names, and read with ``weights_only=True``. What a user of the exported model needs to know (the
input size and preprocessing, the outputs and what each of their columns means) travels with it as a
:class:`ModelCard`: in the ONNX metadata, the TorchScript extra files and the safetensors header.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mnet_tasks.backbone import ConvBnAct
from mnet_tasks.config import ConfigError, compose_config, config_dir, resolve_input_size
from mnet_tasks.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from mnet_tasks.tasks.base import TaskModule

CARD_KEY = "mnet_tasks"  # the metadata key (ONNX, safetensors) or extra file stem (TorchScript) of the card


@dataclass(frozen=True)
class Head:
    """One output of the model: ``num_outputs`` scores, named by ``labels`` (attribute names, cell tokens) or by
    their index when ``labels`` is empty; a geolocation head also has each cell's centroid (latitude, longitude)."""

    name: str
    num_outputs: int
    labels: list[str] = field(default_factory=list)
    centroids: list[list[float]] = field(default_factory=list)


@dataclass(frozen=True)
class ModelCard:
    """What running the model needs: preprocessing (resize the shorter side to ``input_size / crop_pct``,
    centre-crop ``input_size``, normalise by ``mean``/``std``) and how to read its outputs.

    The model takes ``images`` ``(N, 3, input_size, input_size)`` float32 and returns, for every head in order,
    its logits and its probabilities (``activation``: softmax over classes or cells, sigmoid per attribute).
    """

    task: str
    family: str
    alpha: float
    input_size: int
    crop_pct: float
    heads: list[Head]
    predict_head: str
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))

    @property
    def activation(self) -> str:
        return FAMILIES[self.family].activation

    @property
    def output_names(self) -> list[str]:
        """``logits``, ``probabilities`` for one head; ``logits_<head>``, ``probabilities_<head>`` for several."""
        if len(self.heads) == 1:
            return ["logits", "probabilities"]
        return [f"{kind}_{head.name}" for head in self.heads for kind in ("logits", "probabilities")]

    def head(self, name: str) -> Head:
        return next(head for head in self.heads if head.name == name)

    def probability_output(self, head_name: str) -> str:
        return self.output_names[2 * [head.name for head in self.heads].index(head_name) + 1]

    def transform(self):
        """The validation transform the model was evaluated with, from an ``HxWx3`` uint8 image."""
        return eval_transform(self.input_size, self.crop_pct, self.mean, self.std)

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
    """How one kind of task is rebuilt from a checkpoint and how its outputs and data are read."""

    name: str
    activation: str
    metric: str  # what the int8 accuracy check reports on the validation split
    hparam_key: str  # the hyper-parameter only this family's checkpoints have

    def task_class(self) -> type[TaskModule]:
        raise NotImplementedError

    def rebuild_kwargs(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments from the saved hyper-parameters: no pretrained source (the weights come from the
        checkpoint), and nothing the constructor does not take."""
        accepted = inspect.signature(self.task_class().__init__).parameters
        kwargs = {key: value for key, value in hparams.items() if key in accepted}
        kwargs["backbone"] = {**hparams["backbone"], "pretrained": None}
        return kwargs

    def network(self, module: TaskModule) -> nn.Module:
        """The task's forward as plain modules (a LightningModule cannot be traced): here its MobileNetV1."""
        return module.backbone

    def heads(self, hparams: Mapping[str, Any]) -> list[Head]:
        raise NotImplementedError

    def predict_head(self, hparams: Mapping[str, Any]) -> str:
        return self.heads(hparams)[0].name

    def data_kwargs(self, hparams: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
        """Arguments the DataModule needs to label the data as the checkpoint does."""
        return {}

    def images_and_targets(self, batch: Any, card: ModelCard) -> tuple[torch.Tensor, np.ndarray]:
        """A validation batch's images and what ``score`` compares the predicted head's probabilities with."""
        raise NotImplementedError

    def score(self, probabilities: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
        """The metric summed over the scored items, and their number."""
        raise NotImplementedError

    def decisions(self, probabilities: np.ndarray) -> np.ndarray:
        """What a prediction decides (the top class, or each attribute's presence): compared between models."""
        return probabilities.argmax(1)


class ClassificationFamily(TaskFamily):
    name = "classification"
    activation = "softmax"
    metric = "top1"
    hparam_key = "num_classes"

    def task_class(self) -> type[TaskModule]:
        from mnet_tasks.tasks.classification import ClassificationTask

        return ClassificationTask

    def heads(self, hparams: Mapping[str, Any]) -> list[Head]:
        return [Head("classes", int(hparams["num_classes"]))]

    def images_and_targets(self, batch: Any, card: ModelCard) -> tuple[torch.Tensor, np.ndarray]:
        images, labels = batch
        return images, labels.numpy()

    def score(self, probabilities: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
        return float((probabilities.argmax(1) == targets).sum()), len(targets)


class AttributesFamily(TaskFamily):
    name = "attributes"
    activation = "sigmoid"
    metric = "mean_accuracy"  # over attributes, at probability 0.5, as val/mean_accuracy
    hparam_key = "attribute_names"

    def task_class(self) -> type[TaskModule]:
        from mnet_tasks.tasks.attributes import AttributeTask

        return AttributeTask

    def rebuild_kwargs(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().rebuild_kwargs(hparams), "teacher": None}  # the teacher only mattered for training

    def heads(self, hparams: Mapping[str, Any]) -> list[Head]:
        names = list(hparams["attribute_names"])
        return [Head("attributes", len(names), labels=names)]

    def images_and_targets(self, batch: Any, card: ModelCard) -> tuple[torch.Tensor, np.ndarray]:
        targets = batch["target"].numpy().copy()
        targets[~batch["labeled"].numpy()] = np.nan  # unlabeled images are not scored
        return batch["image"], targets

    def score(self, probabilities: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
        labeled = ~np.isnan(targets).any(1)
        correct = (probabilities[labeled] >= 0.5) == (targets[labeled] == 1)
        return float(correct.mean(1).sum()), int(labeled.sum())

    def decisions(self, probabilities: np.ndarray) -> np.ndarray:
        return probabilities >= 0.5


class GeolocalizationFamily(TaskFamily):
    name = "geolocalization"
    activation = "softmax"
    metric = "cell_top1"  # of the predicted head, over the validation photos that lie in one of its cells
    hparam_key = "partitions"

    def task_class(self) -> type[TaskModule]:
        from mnet_tasks.tasks.geolocalization import GeolocalizationTask

        return GeolocalizationTask

    def network(self, module: TaskModule) -> nn.Module:
        return CellHeads(module.backbone, module.heads)

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


class CellHeads(nn.Module):
    """The geolocalization task's forward: pooled backbone features into every cell head."""

    def __init__(self, backbone: nn.Module, heads: nn.ModuleDict):
        super().__init__()
        self.backbone = backbone
        self.heads = heads

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        return {name: head(features) for name, head in self.heads.items()}


# A checkpoint's family is recognised by the hyper-parameter only its checkpoints save.
FAMILIES: dict[str, TaskFamily] = {
    family.name: family for family in (AttributesFamily(), GeolocalizationFamily(), ClassificationFamily())
}


def family_of(hparams: Mapping[str, Any], source: str | Path) -> TaskFamily:
    if "detector" in hparams:
        raise ValueError(
            f"{source} is a detection checkpoint: export and predict here cover classification, "
            "attributes and geolocalization"
        )
    for family in FAMILIES.values():
        if family.hparam_key in hparams:
            return family
    raise ValueError(
        f"{source}: its hyper_parameters have none of {', '.join(f.hparam_key for f in FAMILIES.values())}; "
        "not a checkpoint of a classification, attributes or geolocalization task"
    )


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The saved hyper-parameters and state_dict of a Lightning checkpoint, read with ``weights_only=True``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or not {"state_dict", "hyper_parameters"} <= payload.keys():
        raise ValueError(f"{path} is not a checkpoint of this project (no state_dict and hyper_parameters)")
    return dict(payload["hyper_parameters"]), payload["state_dict"]


@dataclass
class TrainedModel:
    """A task module as trained (eval mode, the checkpoint's weights), its family and card."""

    module: TaskModule
    family: TaskFamily
    card: ModelCard
    hparams: dict[str, Any]

    def network(self) -> InferenceNetwork:
        """A copy ready to run and to export: logits and probabilities per head, BN folded into the convolutions."""
        network = fold_batchnorm(self.family.network(copy.deepcopy(self.module)))
        return InferenceNetwork(network, [head.name for head in self.card.heads], self.card.activation).eval()

    def reference(self) -> InferenceNetwork:
        """The task module's own forward as trained (BN unfolded): what every export is checked against."""
        return InferenceNetwork(self.module, [head.name for head in self.card.heads], self.card.activation).eval()


def load_trained(path: str | Path, crop_pct: float) -> TrainedModel:
    """Rebuild a checkpoint's task module from its hyper-parameters; ``crop_pct`` is its data's validation crop."""
    hparams, state_dict = read_checkpoint(path)
    family = family_of(hparams, path)
    try:
        module = family.task_class()(**family.rebuild_kwargs(hparams))
        module.load_state_dict(state_dict)
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        raise ValueError(f"{path}: the {family.name} task cannot be rebuilt from its checkpoint ({error})") from error
    backbone = hparams["backbone"]
    card = ModelCard(
        task=hparams.get("name", family.name),
        family=family.name,
        alpha=float(backbone["alpha"]),
        input_size=resolve_input_size(
            hparams["native_resolution"], backbone.get("rho", 1.0), backbone.get("resolution")
        ),
        crop_pct=float(crop_pct),
        heads=family.heads(hparams),
        predict_head=family.predict_head(hparams),
    )
    return TrainedModel(module.eval(), family, card, hparams)


class InferenceNetwork(nn.Module):
    """A task network returning a flat tuple in :attr:`ModelCard.output_names` order: per head, logits then
    probabilities. One tensor per output is what ONNX and TorchScript carry best."""

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


def task_config_name(hparams: Mapping[str, Any], family: TaskFamily) -> str:
    """The ``task`` config group option of a checkpoint: its saved name where conf/task has it (finegrained),
    else its family's."""
    name = hparams.get("name")
    return name if name and (config_dir() / "task" / f"{name}.yaml").is_file() else family.name


def compose_for_checkpoint(config_name: str, overrides: Sequence[str], key: str) -> DictConfig:
    """Compose ``config_name``; when the override of config key ``key`` names a checkpoint, its task is chosen
    before the user's overrides (so that ``data`` is its task's data), unless they choose ``task`` themselves."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = {override.key_or_group: override for override in OverridesParser.create().parse_overrides(overrides)}
    if key not in parsed or parsed[key].value() is None:
        raise ConfigError(f"{key} is required: {key}=/path/to/model")
    path = str(parsed[key].value())
    if "task" in parsed or Path(path).suffix != ".ckpt":
        return compose_config(overrides, config_name)
    hparams, _ = read_checkpoint(path)
    return compose_config([f"task={task_config_name(hparams, family_of(hparams, path))}", *overrides], config_name)
