"""Timing pieces the bench, the leaderboard and the model card share: the models timed, interleaved timing rounds,
and the CPU they ran on."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnet_tasks.adapter import TaskAdapter


@dataclass
class Subject:
    """One model at one input size; ``build`` gives a fresh instance, which is timed with its BatchNorm folded
    into the convolutions if ``fold_bn`` (our models, as predict and export run them)."""

    name: str
    build: Callable[[], nn.Module]
    input_size: int
    adapter: TaskAdapter
    alpha: float | None = None
    rho: float | None = None
    fold_bn: bool = False
    params: int = 0
    madds: int = 0

    def runnable(self) -> nn.Module:
        from mnet_tasks.trained import fold_batchnorm

        model = self.build().eval()
        return fold_batchnorm(model) if self.fold_bn else model


@dataclass
class Timer:
    """Repeated calls of one prepared inference; ``times`` collects seconds per call."""

    subject: Subject
    runtime: str
    batch: int
    call: Callable[[], Any]
    times: list[float] = field(default_factory=list)

    def median_s(self) -> float:
        return statistics.median(self.times)


def time_interleaved(timers: Sequence[Timer], warmup: int, rounds: int, per_round: int, settle_s: float = 0.0) -> None:
    """Warm every timer up, then in each round time ``per_round`` calls of every timer in turn.

    Each turn starts with a pause of ``settle_s``, in which the worker threads the previous runtime left spinning
    (ONNX Runtime's and OpenMP's wait busily for more work) go to sleep; measured here, without it a session timed
    right after another ONNX Runtime session ran 2x slower. At batch 1 the turn then makes one untimed call, which
    brings the model back into the caches the other models used.

    Hand-written rather than ``torch.utils.benchmark.Timer``: that times one statement's runs back to back (no
    turns across subjects, no pause between runtimes) and sets its own thread count for torch only, not for ONNX
    Runtime, while the bench compares both at one ``--threads``.
    """
    for timer in timers:
        for _ in range(warmup):
            timer.call()
    for _ in range(rounds):
        for timer in timers:
            time.sleep(settle_s)
            if timer.batch == 1:
                timer.call()
            for _ in range(per_round):
                start = time.perf_counter()
                timer.call()
                timer.times.append(time.perf_counter() - start)


def eager_call(model: nn.Module, images: torch.Tensor, memory_format: torch.memory_format) -> Callable[[], Any]:
    model = model.to(memory_format=memory_format)
    images = images.contiguous(memory_format=memory_format)

    def call() -> Any:
        with torch.inference_mode():
            return model(images)

    return call


def cpu_name() -> str:
    """The CPU's model name (Linux's ``/proc/cpuinfo``), else what the platform reports."""
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
