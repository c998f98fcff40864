"""A trained detector for export and predict: the whole torchvision detector, NMS included, in one ONNX graph.

The exported model takes one ``image`` ``(3, H, W)`` float32 in ``[0, 1]`` of any size: the graph resizes and
normalises it as the detector does (SSD: to its square input; Faster-RCNN: shorter side to its input size), runs
the network, decodes the boxes and applies the per-class score threshold, top-k and NMS. Its outputs, for the
``detections_per_img`` best detections: ``boxes`` ``(K, 4)`` x0, y0, x1, y1 in the input image's pixels,
``labels`` ``(K,)`` 1..num_classes (the card's ``ids`` map them to the dataset's category ids, ``labels`` to
names) and ``scores`` ``(K,)``, highest first. What is left to the caller: a score threshold for display.

The torch.export-based exporter cannot yet carry torchvision's NMS and RoIAlign, so detectors export with the
TorchScript-based one (opset 17), one image per call: the batch dimension is the image list, as torchvision's
detectors take it.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mnet_tasks.adapter import BrowseSample, RunExported, TaskAdapter
from mnet_tasks.model_card import Head, ModelCard
from mnet_tasks.onnx_io import write_card
from mnet_tasks.task_module import TaskModule
from mnet_tasks.tasks.detection.draw import draw_detections
from mnet_tasks.tasks.detection.ssd import ssd_mobilenet_v1

OUTPUTS = ["boxes", "labels", "scores"]
ONNX_OPSET = 17


class DetectorOutputs(nn.Module):
    """One image in, the detector's ``boxes``, ``labels`` and ``scores`` out as a tuple (eval mode)."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        detections = self.detector([image])[0]
        return detections["boxes"], detections["labels"], detections["scores"]


def match_detections(expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> tuple[float, float]:
    """Max box and score differences after pairing each expected detection with the closest unpaired one of the
    same label (near-equal scores may swap places between runtimes)."""
    unpaired = list(range(len(got["scores"])))
    box_diff = score_diff = 0.0
    for box, label, score in zip(expected["boxes"], expected["labels"], expected["scores"], strict=True):
        candidates = [i for i in unpaired if got["labels"][i] == label]
        if not candidates:
            return float("inf"), float("inf")
        distances = [np.abs(got["boxes"][i] - box).max() for i in candidates]
        best = candidates[int(np.argmin(distances))]
        unpaired.remove(best)
        box_diff = max(box_diff, float(min(distances)))
        score_diff = max(score_diff, float(abs(got["scores"][best] - score)))
    return box_diff, score_diff


class DetectionAdapter(TaskAdapter):
    """SSD and Faster-RCNN: detections per image, exported to ONNX with their post-processing."""

    metric = "map"
    preprocess = "image"
    supports_int8 = False
    formats = ("onnx",)
    parity_atol: ClassVar[dict[str, float]] = {
        "boxes": 0.05,
        "count": 0,
    }  # box corners in pixels; detections per image must agree

    def network(self, module: TaskModule) -> nn.Module:
        return module.detector

    def heads(self, hparams: Mapping[str, Any]) -> list[Head]:
        ids = list(hparams.get("category_ids") or range(1, int(hparams["num_classes"]) + 1))
        names = list(hparams.get("category_names") or map(str, ids))
        return [Head("objects", len(ids), labels=names, ids=ids)]

    def output_names(self, heads: Sequence[Head]) -> list[str]:
        return list(OUTPUTS)

    def inference_network(self, network: nn.Module, card: ModelCard | None) -> nn.Module:
        return DetectorOutputs(network)

    def example_images(self, card: ModelCard, count: int, seed: int = 0) -> list[torch.Tensor]:
        """Images of several sizes and aspect ratios, since the graph resizes them."""
        generator = torch.Generator().manual_seed(seed)
        size = card.input_size
        shapes = [(size, size), (round(0.75 * size), round(1.25 * size)), (round(1.5 * size), size)]
        return [torch.rand(3, *shapes[i % len(shapes)], generator=generator) for i in range(count)]

    def run(self, call: RunExported, images: Sequence[torch.Tensor], card: ModelCard) -> dict[str, list[np.ndarray]]:
        """Each image in its own call; every output as a list over the images."""
        per_image = [dict(zip(card.output_names, call(image), strict=True)) for image in images]
        return {name: [outputs[name] for outputs in per_image] for name in card.output_names}

    def compare(self, expected: Mapping[str, Any], got: Mapping[str, Any]) -> dict[str, float]:
        """Per image the difference in detection count, then the max box (pixels) and score differences of the
        paired detections."""
        count = boxes = scores = 0.0
        for index in range(len(expected["scores"])):
            want = {name: np.asarray(expected[name][index]) for name in OUTPUTS}
            have = {name: np.asarray(got[name][index]) for name in OUTPUTS}
            count = max(count, float(abs(len(want["scores"]) - len(have["scores"]))))
            box_diff, score_diff = match_detections(want, have)
            boxes, scores = max(boxes, box_diff), max(scores, score_diff)
        return {"count": count, "boxes": boxes, "scores": scores}

    def export_onnx(self, network: nn.Module, path: Path, input_size: int, card: ModelCard | None = None) -> Path:
        example = torch.rand(3, input_size, input_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic and the exporter's deprecation
            torch.onnx.export(
                network.eval(),
                (example,),
                str(path),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=["image"],
                output_names=list(OUTPUTS),
                dynamic_axes={"image": {1: "height", 2: "width"}, **{name: {0: "detections"} for name in OUTPUTS}},
            )
        if card is not None:
            write_card(path, card)
        return path

    # Benchmark: SSD at COCO's 90 classes against torchvision's SSDlite, both with their post-processing.
    bench_runtimes = ("eager_nchw", "eager_channels_last", "onnxruntime_fp32")
    bench_throughput_batch = 0  # one image per call, as the exported model takes it
    bench_native_size = 300

    def bench_anchors(self) -> dict[str, Callable[[], nn.Module]]:
        from torchvision.models.detection import ssdlite320_mobilenet_v3_large

        return {
            "torchvision_ssdlite320_mobilenet_v3_large": lambda: with_background_prior(
                ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
            )
        }

    def bench_name(self, alpha: float, size: int) -> str:
        return f"mnet_tasks SSD{size} a={alpha}"

    def bench_model(self, alpha: float, size: int) -> nn.Module:
        return with_background_prior(ssd_mobilenet_v1(90, alpha, size))

    def bench_input(self, size: int, batch: int) -> torch.Tensor:
        return torch.rand(batch, 3, size, size)

    def exported_input(self, images: torch.Tensor) -> torch.Tensor:
        return images[0]

    def describe(self, card: ModelCard, outputs: Mapping[str, Any], paths: Sequence[str], options: Any) -> list[dict]:
        """Per image, the detections scoring at least ``options.min_score``, with category id and name."""
        head = card.heads[0]
        records = []
        for index, path in enumerate(paths):
            boxes, labels, scores = (np.asarray(outputs[name][index]) for name in OUTPUTS)
            keep = scores >= options.min_score
            records.append(
                {
                    "image": path,
                    "detections": [
                        {
                            "category_id": head.ids[label - 1],
                            "label": head.labels[label - 1],
                            "score": float(score),
                            "box": [round(float(v), 2) for v in box],
                        }
                        for box, label, score in zip(boxes[keep], labels[keep], scores[keep], strict=True)
                    ],
                }
            )
        return records

    def write_predictions(self, output_dir: Path, card: ModelCard, records: list[dict]) -> None:
        """``predictions.csv``: one row per detection, boxes x0, y0, x1, y1 in the image's pixels."""
        with open(output_dir / "predictions.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["image", "category_id", "label", "score", "x0", "y0", "x1", "y1"])
            for record in records:
                for found in record["detections"]:
                    writer.writerow(
                        [record["image"], found["category_id"], found["label"], f"{found['score']:.6f}", *found["box"]]
                    )

    def save_pictures(self, output_dir: Path, card: ModelCard, records: list[dict], images: list[torch.Tensor]) -> None:
        """Each image with its boxes drawn, as ``pictures/<image name>.png``."""
        folder = output_dir / "pictures"
        folder.mkdir(parents=True, exist_ok=True)
        names = card.heads[0].labels
        for record, image in zip(records, images, strict=True):
            found = record["detections"]
            detections = {
                "boxes": torch.tensor([d["box"] for d in found], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([names.index(d["label"]) + 1 for d in found], dtype=torch.int64),
                "scores": torch.tensor([d["score"] for d in found]),
            }
            draw_detections(image, detections, names, min_score=0.0).save(folder / f"{Path(record['image']).stem}.png")

    def browse_samples(self, batch: Any, datamodule: Any) -> list[BrowseSample]:
        """Each image with its target boxes, named by the DataModule's categories (labels 1..K)."""
        images, targets = batch
        names = datamodule.head_kwargs()["category_names"]
        samples = []
        for image, target in zip(images, targets, strict=True):
            labels = target["labels"].tolist()
            caption = f"image {int(target['image_id'])}: {len(labels)} {'box' if len(labels) == 1 else 'boxes'}"
            samples.append(BrowseSample(image, [caption], target["boxes"], [names[label - 1] for label in labels]))
        return samples


@torch.no_grad()
def with_background_prior(detector: nn.Module, logit: float = 8.0) -> nn.Module:
    """Make an untrained SSD score boxes like a trained one: mostly background.

    Untrained, every class scores about 1/91 on every box, above both detectors' score thresholds, so NMS over
    170k candidates would be the whole benchmark; trained detectors pass few boxes to NMS.
    """
    head = detector.head.classification_head
    for branch in head.module_list:
        last_conv = [m for m in branch.modules() if isinstance(m, nn.Conv2d)][-1]
        last_conv.bias.view(-1, head.num_columns)[:, 0] = logit
    return detector
