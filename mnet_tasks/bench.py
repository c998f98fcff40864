"""Eager PyTorch latency of our models beside a reference model as the anchor, measured in one run.

``python -m mnet_tasks.bench --alpha 1.0 --size 224 --batch 1`` prints one row per model and memory format,
with the median latency and its ratio to the anchor in the same format: MobileNetV1 against timm's
``mobilenetv1_100``, or with ``--task detection`` SSD300-MobileNetV1 (post-processing included) against
torchvision's ``ssdlite320_mobilenet_v3_large``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import timm
import torch
from torch import nn

from mnet_tasks.backbone import MobileNetV1
from mnet_tasks.profile import profile_model

MEMORY_FORMATS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}


@torch.inference_mode()
def median_latency_ms(model: nn.Module, images: torch.Tensor, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        model(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(images)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def benchmark(
    models: dict[str, Callable[[], nn.Module]], size: int, batch: int, repeats: int, warmup: int
) -> list[dict]:
    rows = []
    for memory_format_name, memory_format in MEMORY_FORMATS.items():
        images = torch.randn(batch, 3, size, size).contiguous(memory_format=memory_format)
        for name, build in models.items():
            model = build().eval().to(memory_format=memory_format)
            cost = profile_model(model, size)
            latency = median_latency_ms(model, images, repeats, warmup)
            rows.append(dict(model=name, format=memory_format_name, madds=cost.madds, params=cost.params, ms=latency))
    return rows


def format_table(rows: list[dict], anchor: str) -> str:
    anchors = {row["format"]: row["ms"] for row in rows if row["model"] == anchor}
    lines = [f"{'model':<32}{'format':<15}{'MAdds (M)':>10}{'params (M)':>12}{'median ms':>11}{'vs anchor':>11}"]
    for row in rows:
        ratio = row["ms"] / anchors[row["format"]]
        lines.append(
            f"{row['model']:<32}{row['format']:<15}{row['madds'] / 1e6:>10.1f}{row['params'] / 1e6:>12.2f}"
            f"{row['ms']:>11.2f}{ratio:>10.2f}x"
        )
    return "\n".join(lines)


def classification_models(alphas: list[float]) -> tuple[str, dict[str, Callable[[], nn.Module]]]:
    anchor = "timm mobilenetv1_100"
    models: dict[str, Callable[[], nn.Module]] = {anchor: lambda: timm.create_model("mobilenetv1_100")}
    for alpha in alphas:
        models[f"mnet_tasks MobileNetV1 a={alpha}"] = lambda alpha=alpha: MobileNetV1(alpha=alpha)
    return anchor, models


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


def detection_models(alphas: list[float], size: int) -> tuple[str, dict[str, Callable[[], nn.Module]]]:
    """Untrained detectors over COCO's 90 classes with a background prior; each keeps its post-processing."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    from mnet_tasks.detection.ssd import SSD_FEATURE_INDICES, build_ssd

    anchor = "torchvision ssdlite320_mbv3"
    models: dict[str, Callable[[], nn.Module]] = {
        anchor: lambda: with_background_prior(
            ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
        )
    }

    def ssd(alpha: float) -> nn.Module:
        body = MobileNetV1(num_classes=0, alpha=alpha, features_only=True, out_indices=SSD_FEATURE_INDICES)
        return with_background_prior(build_ssd(body, 90, size))

    for alpha in alphas:
        models[f"mnet_tasks SSD{size} a={alpha}"] = functools.partial(ssd, alpha)
    return anchor, models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["classification", "detection"], default="classification")
    parser.add_argument("--alpha", type=float, nargs="+", default=[1.0])
    parser.add_argument("--size", type=int, default=None, help="input size (default 224; 300 for detection)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    if args.task == "detection":
        size = args.size or 300
        anchor, models = detection_models(args.alpha, size)
    else:
        size = args.size or 224
        anchor, models = classification_models(args.alpha)
    print(f"batch {args.batch}, {size}px, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(format_table(benchmark(models, size, args.batch, args.repeats, args.warmup), anchor))


if __name__ == "__main__":
    main()
