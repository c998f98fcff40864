"""How a task's trained model is rebuilt, exported, run, scored and read: its :class:`TaskAdapter`.

The base adapter serves a network of classifier heads (logits and probabilities per head): a task class uses it
unless it names another as ``adapter`` (detection's returns boxes, attributes' score each attribute). It also says
how a loader's batch is shown by the dataset browser (:meth:`TaskAdapter.browse_samples`).
"""

from __future__ import annotations

import csv
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mnet_tasks.backbone import MobileNetV1
from mnet_tasks.config import ConfigError
from mnet_tasks.model_card import Head, ModelCard
from mnet_tasks.onnx_io import export_onnx
from mnet_tasks.task_module import TaskModule

PRESENT_THRESHOLD = 0.5  # a sigmoid head's label is predicted present at this probability

# A model as a runtime runs it: its input tensor in, its outputs in the card's order out.
RunExported = Callable[[torch.Tensor], Sequence[np.ndarray]]


@dataclass
class BrowseSample:
    """One sample as the model receives it, for the dataset browser (``python -m mnet_tasks.browse``): the loader's
    ``(3, H, W)`` image (uint8, or float normalised by the config's ``normalize``), the caption lines under it, and
    boxes ``(N, 4)`` x0, y0, x1, y1 in its pixels with their ``box_labels``."""

    image: torch.Tensor
    caption: list[str]
    boxes: torch.Tensor | None = None
    box_labels: list[str] = field(default_factory=list)


class TaskAdapter:
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
    # The export parity check's tolerance per output, where it is not ``parity.atol`` (conf/export.yaml).
    parity_atol: ClassVar[dict[str, float]] = {}

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

    def verify(self, output_dir: Path, records: list[dict], others: list[dict], threshold: float | None) -> list[dict]:
        """Predict's ``compare_with``: every record of ``images`` against every one of the other folder, for tasks
        whose outputs compare (embeddings); written to ``output_dir`` and returned."""
        raise ConfigError("compare_with: this task's predictions do not compare images with each other")

    def browse_samples(self, batch: Any, datamodule: Any) -> list[BrowseSample]:
        """A loader's batch as the dataset browser shows it, labels named with what ``datamodule`` knows: here
        ``(images, class indices)``, each class named by the DataModule's ``class_names`` where it has them (the
        built-in ones do), else by its index."""
        images, labels = batch
        names = getattr(datamodule, "class_names", None)
        return [
            BrowseSample(image, [names[label] if names else f"class {label}"])
            for image, label in zip(images, labels.tolist(), strict=True)
        ]


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


def adapter_of(cls: type[TaskModule]) -> TaskAdapter:
    """The adapter a task class names (``TaskModule.adapter``); classifier heads by default."""
    return cls.adapter or TaskAdapter()


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
