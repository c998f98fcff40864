"""Speed of a task's MobileNetV1 network beside reference models, measured in one process and one run.

``python -m mnet_tasks.bench --alpha 1.0 0.5 --rho 1.0 0.714`` measures, for every α×ρ: params, MAdds, the
batch-1 latency and the batched throughput in up to four runtimes (PyTorch eager NCHW, eager channels_last, ONNX
Runtime fp32, ONNX Runtime int8), for our network as ``predict`` and ``export`` run it (BatchNorm folded) and, at
each input size, for the task's reference models (random weights, nothing downloaded). ``--task`` names any
registered task; its adapter (:class:`mnet_tasks.adapter.TaskAdapter`) says what is timed:

- the default (classification, attributes, geolocalization: the cost is the backbone): MobileNetV1 at
  ``224ρ`` px beside timm ``mobilenetv1_100`` (the anchor), torchvision ``mobilenet_v2`` and ``mobilenet_v3_large``;
- ``--task detection``: SSD at ``300ρ`` px with its post-processing, as exported (NMS in the ONNX graph), beside
  torchvision's ``ssdlite320_mobilenet_v3_large``, one image per call.

The int8 models are quantized as ``export int8=true`` does, calibrated on random images (speed does not depend on
the calibration; accuracy is measured by the export). Models are timed in interleaved rounds, so that a change of
load on a shared machine hits all of them alike; every number is the median over the rounds, after warm-up.

Then the training throughput (:mod:`mnet_tasks.training_bench`): a bare loop over prepared batches (the anchor), the
same fed by the task's loader, Lightning's loop and, with ``--run-epochs``, the run itself, all with the task's
own training step on the same model and batch (``--no-training`` skips it); and with ``--loader`` the task's
training and validation pipelines per worker on ImageNet-size JPEGs beside PIL's decode of the same files.
``--gpu-check`` is the GPU check: training and loader only, 1.0 MobileNet-224 and 0.25 MobileNet-128 with
``trainer=gpu``, ``torch.compile`` both ways.

Writes ``bench.csv``, ``training.csv``, ``loader.csv`` and ``bench.md`` (the tables and the ratios) to
``--out-dir``. ``--quick`` is a small smoke run of every path.

Command line: argparse, not a Hydra app: one process times many networks and sizes interleaved, and composes each
task's config itself (``--task``).
"""

from __future__ import annotations

import argparse
import csv
import functools
import itertools
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from mnet_tasks.adapter import TaskAdapter, adapter_of
from mnet_tasks.config import compose_config
from mnet_tasks.cost import profile_model
from mnet_tasks.registry import task_class_of_target
from mnet_tasks.timing import Subject, Timer, cpu_name, eager_call, time_interleaved
from mnet_tasks.training_bench import (
    LOADER_COLUMNS,
    TRAINING_COLUMNS,
    limiting_part,
    loader_throughput,
    training_throughput,
)

RUNTIMES = ("eager_nchw", "eager_channels_last", "onnxruntime_fp32", "onnxruntime_int8")
EAGER_FORMATS = {"eager_nchw": torch.contiguous_format, "eager_channels_last": torch.channels_last}
COLUMNS = (
    "model",
    "alpha",
    "rho",
    "input_size",
    "runtime",
    "params",
    "madds",
    "threads",
    "latency_ms",
    "latency_vs_anchor",
    "throughput_batch",
    "throughput_images_per_s",
)
# The smallest real run of every path: a thin network, tiny inputs, a few timings, a few training steps.
QUICK_DEFAULTS = dict(
    alpha=[0.25],
    size=64,
    repeats=3,
    warmup=1,
    rounds=1,
    throughput_batch=4,
    throughput_repeats=1,
    settle=0.0,
    train_steps=2,
    train_warmup=1,
    train_rounds=1,
    run_epochs=1,
    loader=True,
    loader_sizes=[64],
    loader_images=4,
    loader_rounds=1,
    train_overrides=[
        "backbone.alpha=0.25",
        "backbone.resolution=64",
        "data.synthetic.num_classes=4",
        "data.synthetic.train_per_class=8",
        "data.synthetic.val_per_class=2",
        "data.synthetic.image_size=48",
        "data.batch_size=8",
    ],
)
# The GPU check: what limits training on a GPU, for the paper's largest and smallest network.
GPU_CHECK_DEFAULTS = dict(
    inference=False,
    loader=True,
    compile=True,
    train_models=["1.0@224", "0.25@128"],
    train_steps=50,
    train_workers=min(8, os.cpu_count() or 1),
    train_overrides=["trainer=gpu", "data.batch_size=256"],
)


def task_subjects(
    adapter: TaskAdapter, alphas: Sequence[float], sizes: Sequence[int], anchors: Sequence[str] | None
) -> tuple[list[Subject], str | None]:
    """The adapter's anchors and our network at every α, at each input size; and the anchor's name."""
    builders = adapter.bench_anchors()
    anchors = list(builders) if anchors is None else list(anchors)
    unknown = sorted(set(anchors) - builders.keys())
    if unknown:
        raise ValueError(f"--anchors: unknown {unknown}; choose from {', '.join(builders)}")
    subjects = []
    for size in sizes:
        rho = size / adapter.bench_native_size
        subjects += [Subject(name, builders[name], size, adapter, rho=rho) for name in anchors]
        for alpha in alphas:
            build = functools.partial(adapter.bench_model, alpha, size)
            subjects.append(Subject(adapter.bench_name(alpha, size), build, size, adapter, alpha, rho, fold_bn=True))
    return subjects, next(iter(anchors), None)


def prepared_onnx_call(session: Any, images: torch.Tensor) -> Callable[[], Any]:
    """A timed call of an ONNX Runtime session: its input converted once, beforehand (unlike
    :func:`mnet_tasks.onnx_io.onnx_call`, which converts every batch it is given)."""
    feed = {session.get_inputs()[0].name: images.numpy()}
    return lambda: session.run(None, feed)


def random_batches(size: int, count: int = 2, batch: int = 4) -> Iterator[np.ndarray]:
    generator = np.random.default_rng(0)
    for _ in range(count):
        yield generator.standard_normal((batch, 3, size, size), dtype=np.float32)


def onnx_models(subject: Subject, runtimes: Sequence[str], workdir: Path, index: int) -> dict[str, Path]:
    """The subject exported (and quantized) as ``python -m mnet_tasks.export`` does."""
    from mnet_tasks.quantize import quantize_onnx

    adapter = subject.adapter
    network = adapter.inference_network(subject.runnable(), None)
    fp32 = adapter.export_onnx(network, workdir / f"model{index}.onnx", subject.input_size)
    paths = {"onnxruntime_fp32": fp32}
    if "onnxruntime_int8" in runtimes:
        paths["onnxruntime_int8"] = quantize_onnx(
            fp32, workdir / f"model{index}.int8.onnx", random_batches(subject.input_size)
        )
    return {runtime: path for runtime, path in paths.items() if runtime in runtimes}


def benchmark(
    subjects: Sequence[Subject],
    runtimes: Sequence[str],
    threads: int,
    repeats: int,
    warmup: int,
    rounds: int = 10,
    throughput_batch: int = 32,
    throughput_repeats: int = 5,
    settle_s: float = 0.1,
) -> list[dict[str, Any]]:
    """One row per subject and runtime: batch-1 latency (median ms) and, with ``throughput_batch`` > 0, images/s
    at that batch (from its median time)."""
    if throughput_batch == 1:
        raise ValueError("the throughput batch must be 0 (none) or above 1: batch 1 is the latency")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    for subject in subjects:
        cost = profile_model(subject.build(), subject.input_size)
        subject.params, subject.madds = cost.params, cost.madds
    batches = [1] + ([throughput_batch] if throughput_batch > 0 else [])
    with tempfile.TemporaryDirectory() as workdir:
        sessions = {}
        if any(runtime.startswith("onnxruntime") for runtime in runtimes):
            from mnet_tasks.onnx_io import onnx_session

            for index, subject in enumerate(subjects):
                for runtime, path in onnx_models(subject, runtimes, Path(workdir), index).items():
                    sessions[subject.name, subject.input_size, runtime] = onnx_session(path, threads)
        timers: dict[int, list[Timer]] = {batch: [] for batch in batches}
        for subject in subjects:
            for runtime in runtimes:
                model = subject.runnable() if runtime in EAGER_FORMATS else None
                for batch in batches:
                    images = subject.adapter.bench_input(subject.input_size, batch)
                    if model is not None:
                        call = eager_call(model, images, EAGER_FORMATS[runtime])
                    else:
                        session = sessions[subject.name, subject.input_size, runtime]
                        call = prepared_onnx_call(session, subject.adapter.exported_input(images))
                    timers[batch].append(Timer(subject, runtime, batch, call))
        for batch, count in ((1, repeats), (throughput_batch, throughput_repeats)):
            if batch > 0:
                turns = min(rounds, count)
                time_interleaved(timers[batch], warmup if batch == 1 else 1, turns, max(1, count // turns), settle_s)

    rows = []
    throughput = {(t.subject.name, t.subject.input_size, t.runtime): t for t in timers.get(throughput_batch, [])}
    for timer in timers[1]:
        subject = timer.subject
        batched = throughput.get((subject.name, subject.input_size, timer.runtime))
        rows.append(
            {
                "model": subject.name,
                "alpha": subject.alpha,
                "rho": subject.rho,
                "input_size": subject.input_size,
                "runtime": timer.runtime,
                "params": subject.params,
                "madds": subject.madds,
                "threads": threads,
                "latency_ms": 1000 * timer.median_s(),
                "latency_vs_anchor": None,
                "throughput_batch": throughput_batch if batched else None,
                "throughput_images_per_s": throughput_batch / batched.median_s() if batched else None,
            }
        )
    return rows


def add_anchor_ratios(rows: list[dict[str, Any]], anchor: str) -> None:
    """Each row's latency over the anchor's at the same input size and runtime."""
    anchors = {(row["input_size"], row["runtime"]): row["latency_ms"] for row in rows if row["model"] == anchor}
    for row in rows:
        if (reference := anchors.get((row["input_size"], row["runtime"]))) is not None:
            row["latency_vs_anchor"] = row["latency_ms"] / reference


# --- output ---


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows({key: "" if row[key] is None else row[key] for key in columns} for row in rows)


def _number(value: float | None, digits: int, suffix: str = "") -> str:
    return "" if value is None else f"{value:.{digits}f}{suffix}"


def format_markdown(
    rows: Sequence[dict[str, Any]],
    training: Sequence[dict[str, Any]],
    loader: Sequence[dict[str, Any]],
    limits: Sequence[str],
    anchor: str,
    header: str,
) -> str:
    lines = [header, ""]
    throughput_batch = next((row["throughput_batch"] for row in rows if row["throughput_batch"]), None)
    batched = f"batch-{throughput_batch} img/s" if throughput_batch else "batched img/s"
    lines += [
        f"| model | input | runtime | params (M) | MAdds (M) | batch-1 ms | vs {anchor} | {batched} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['input_size']} | {row['runtime']} | {row['params'] / 1e6:.2f} | "
            f"{row['madds'] / 1e6:.1f} | {row['latency_ms']:.2f} | {_number(row['latency_vs_anchor'], 2, 'x')} | "
            f"{_number(row['throughput_images_per_s'], 1)} |"
        )
    speedups = int8_speedups(rows)
    if speedups:
        lines += ["", "int8 speed-up in ONNX Runtime (fp32 over int8 batch-1 latency):"]
        lines += [f"- {model} ({size}px): {speedup:.2f}x" for (model, size), speedup in speedups.items()]
    for _, rows_of_model in itertools.groupby(training, key=lambda row: (row["model"], row["input_size"])):
        group = list(rows_of_model)
        row = group[0]
        lines += [
            "",
            f"Training throughput ({row['model']}, {row['input_size']}px, batch {row['batch_size']}, {row['device']}, "
            f"{row['precision']}, {row['workers']} dataloader workers, threads: {row['threads']}, "
            f"{row['steps']} timed steps):",
            "",
            "| loop | layout | images/s | data wait | vs bare step | vs bare loop |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['loop']} | {r['memory_format']} | {r['images_per_s']:.1f} | {_number(r['data_wait'], 2)} | "
            f"{r['vs_step']:.2f}x | {_number(r['vs_loop'], 2, 'x')} |"
            for r in group
        ]
    if loader:
        lines += [
            "",
            f"Loader, one worker (this process, one thread), {loader[0]['images']} ImageNet-size JPEGs (500x375, q90):",
            "",
            "| pipeline | input | ms/image | images/s | vs PIL decode |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['pipeline']} | {r['input_size']} | {r['ms_per_image']:.2f} | {r['images_per_s']:.0f} | "
            f"{r['vs_decode']:.2f}x |"
            for r in loader
        ]
    if limits:
        lines += ["", *limits]
    return "\n".join(lines) + "\n"


def int8_speedups(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, int], float]:
    """fp32 over int8 batch-1 latency in ONNX Runtime, per model and input size."""
    latency = {(row["model"], row["input_size"], row["runtime"]): row["latency_ms"] for row in rows}
    return {
        (model, size): latency[model, size, "onnxruntime_fp32"] / int8
        for (model, size, runtime), int8 in latency.items()
        if runtime == "onnxruntime_int8" and (model, size, "onnxruntime_fp32") in latency
    }


def run_header(threads: int) -> str:
    import onnxruntime
    import torchvision

    cpu = cpu_name()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"{datetime.now():%Y-%m-%d %H:%M}, {cpu}, {os.cpu_count()} CPUs, "
        f"threads: {threads} (PyTorch and ONNX Runtime), load average {load} at the start; "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"timm {timm.__version__}, onnxruntime {onnxruntime.__version__}"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--task", default=None, help="a task config (python -m mnet_tasks task=...); default: the default"
    )
    parser.add_argument("--alpha", type=float, nargs="+", default=[1.0])
    parser.add_argument("--rho", type=float, nargs="+", default=[1.0], help="resolution multipliers (224 px x rho)")
    parser.add_argument("--size", type=int, default=None, help="one input size instead of --rho")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=None, help="default: all the task's")
    parser.add_argument("--anchors", nargs="+", default=None, help="reference models; default: all the task's")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=100, help="timed batch-1 calls per model and runtime")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds the repeats are split into")
    parser.add_argument("--throughput-batch", type=int, default=None, help="default: the task's (32); 0 skips it")
    parser.add_argument("--throughput-repeats", type=int, default=5)
    parser.add_argument("--settle", type=float, default=0.1, help="seconds of pause before each model's turn")
    parser.add_argument("--inference", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--training", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--train-steps", type=int, default=30, help="timed training steps per loop and round")
    parser.add_argument("--train-warmup", type=int, default=5, help="untimed first training steps per loop and round")
    parser.add_argument("--train-rounds", type=int, default=3, help="turns each training loop takes, interleaved")
    parser.add_argument("--train-workers", type=int, default=2)
    parser.add_argument("--train-overrides", nargs="*", default=[], help="config overrides of the trained task")
    parser.add_argument(
        "--train-models", nargs="*", default=[], help="ALPHA@SIZE networks to train (default: the config's)"
    )
    parser.add_argument("--run-epochs", type=int, default=0, help="also time the run itself for N epochs")
    parser.add_argument("--compile", action="store_true", help="also time Lightning's loop with trainer.compile")
    parser.add_argument(
        "--loader", action=argparse.BooleanOptionalAction, default=False, help="time the task's pipelines on JPEGs"
    )
    parser.add_argument("--loader-sizes", type=int, nargs="+", default=[224, 128])
    parser.add_argument("--loader-images", type=int, default=64)
    parser.add_argument("--loader-rounds", type=int, default=3)
    parser.add_argument("--out-dir", type=Path, default=None, help="default: outputs/bench/<time>")
    parser.add_argument("--quick", action="store_true", help="a small smoke run of every path")
    parser.add_argument("--gpu-check", action="store_true", help="training and loader on a GPU (module docstring)")
    if "--gpu-check" in argv:
        parser.set_defaults(**GPU_CHECK_DEFAULTS)
    if "--quick" in argv:
        parser.set_defaults(**QUICK_DEFAULTS)
    return parser.parse_args(argv)


def model_overrides(models: Sequence[str]) -> list[list[str]]:
    """``ALPHA@SIZE`` as config overrides, one list per network; no networks: the config's own."""
    variants = []
    for model in models:
        alpha, _, size = model.partition("@")
        try:
            variants.append([f"backbone.alpha={float(alpha)}", f"backbone.resolution={int(size)}"])
        except ValueError:
            raise SystemExit(f"--train-models: {model!r} is not ALPHA@SIZE, e.g. 0.25@128") from None
    return variants or [[]]


def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    task_overrides = [f"task={args.task}"] if args.task else []
    task = compose_config(task_overrides).task
    adapter = adapter_of(task_class_of_target(task._target_))
    runtimes = args.runtimes or list(adapter.bench_runtimes)
    if unsupported := sorted(set(runtimes) - set(adapter.bench_runtimes)):
        raise SystemExit(f"--runtimes: a {task.name} model does not run in {unsupported}")
    sizes = [args.size] if args.size else [round(adapter.bench_native_size * rho) for rho in args.rho]
    throughput_batch = adapter.bench_throughput_batch if args.throughput_batch is None else args.throughput_batch
    header = run_header(args.threads)
    print(header, flush=True)
    rows, anchor = [], None
    if args.inference:
        subjects, anchor = task_subjects(adapter, args.alpha, sizes, args.anchors)
        rows = benchmark(
            subjects,
            runtimes,
            args.threads,
            args.repeats,
            args.warmup,
            args.rounds,
            throughput_batch,
            args.throughput_repeats,
            args.settle,
        )
        if anchor:
            add_anchor_ratios(rows, anchor)
    training, loader, limits = [], [], []
    if args.loader:
        for size in args.loader_sizes:
            overrides = [*task_overrides, *args.train_overrides, f"backbone.resolution={size}"]
            loader += loader_throughput(overrides, args.loader_images, args.loader_rounds)
    if args.training:
        for variant in model_overrides(args.train_models):
            overrides = [*task_overrides, *args.train_overrides, *variant]
            rows_here = training_throughput(
                overrides,
                args.train_steps,
                args.train_warmup,
                args.train_workers,
                args.run_epochs,
                args.compile,
                args.train_rounds,
            )
            training += rows_here
            at_size = [row for row in loader if row["input_size"] == rows_here[0]["input_size"]]
            if at_size:
                limits.append(
                    f"At {at_size[0]['input_size']}px: {limiting_part(at_size, rows_here, args.train_workers)}."
                )
    out_dir = args.out_dir or Path("outputs") / "bench" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table, columns in (
        ("bench.csv", rows, COLUMNS),
        ("training.csv", training, TRAINING_COLUMNS),
        ("loader.csv", loader, LOADER_COLUMNS),
    ):
        if table:
            write_csv(out_dir / name, table, columns)
    markdown = format_markdown(rows, training, loader, limits, anchor or "anchor", header)
    (out_dir / "bench.md").write_text(markdown)
    print(markdown)
    print(f"written to {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
