"""Training throughput and loader speed, each beside its anchor measured in the same process and run.

The training loops, all on one task's model, optimizer, batch and training step (its loss, metrics and logging):

- ``bare step``: a plain loop over batches prepared in advance (normalised, channels_last, on the device): the
  fastest a user could write, the anchor of every ratio (``vs_step``); ``bare step NCHW`` beside it;
- ``bare loop``: the same loop fed by the task's DataLoader (uint8 batches prepared on the device): the anchor of the
  Lightning loop (``vs_loop``); ``data_wait`` is its share of time spent waiting for the next batch (on a GPU: with
  the device idle, as each step is synchronised before the batch is fetched);
- ``lightning``: ``trainer.fit`` with the configured trainer (its ``channels_last``, ``compile``, precision), no
  validation, logger, checkpoints or progress bar;
- ``run``: ``python -m mnet_tasks`` itself (:func:`mnet_tasks.run.run`) for ``run_epochs`` epochs, everything on; its
  training phase as ``metrics.json`` reports it (``train_images_per_s``, validation excluded).

The loops take turns in ``rounds`` (each one timed for ``steps`` steps per round, after untimed ones that drain
the batches its loader prepared while it waited), and the anchor is timed once more right before and after the run:
on a shared machine the step's speed drifts by 20% within minutes, and loops timed one after the other measured
the drift as much as the loops. Every ratio is of images over seconds summed over all of a loop's turns.

The loader rows time, in this one process (one core, what one worker does), the task's training and validation
pipelines on ImageNet-size JPEGs written here, beside PIL decoding the same files at full size (the anchor).
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device
from PIL import Image
from torch import nn

from mnet_tasks.callbacks import batch_images
from mnet_tasks.config import compose_config

TRAINING_COLUMNS = (
    "loop",
    "model",
    "input_size",
    "batch_size",
    "device",
    "precision",
    "memory_format",
    "workers",
    "threads",
    "steps",
    "images_per_s",
    "data_wait",
    "vs_step",
    "vs_loop",
)
LOADER_COLUMNS = ("pipeline", "input_size", "images", "ms_per_image", "images_per_s", "vs_decode")
STEP_ANCHOR, LOOP_ANCHOR = "bare step", "bare loop"


class StepClock:
    """Wall time and images of the training steps after the first ``skip`` of one turn (worker start-up, first
    allocations, batches prepared ahead); ``wait`` sums the time spent waiting for batches after them. On a GPU
    the clock synchronises at each reading."""

    def __init__(self, skip: int, device: torch.device):
        self.skip, self.device = skip, device
        self.steps = self.images = 0
        self.wait = 0.0
        self.start = self.end = self.now()

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def step_done(self, batch_size: int) -> None:
        now = self.now()
        self.steps += 1
        if self.steps == self.skip:
            self.start = now
        elif self.steps > self.skip:
            self.images += batch_size
            self.end = now

    def waited(self, seconds: float) -> None:
        if self.steps >= self.skip:
            self.wait += seconds


class LoopTotals:
    """One loop's timed steps, images, seconds and waiting summed over its turns."""

    def __init__(self) -> None:
        self.steps = self.images = 0
        self.seconds = self.wait = 0.0

    def add(self, clock: StepClock) -> None:
        self.steps += clock.steps - clock.skip
        self.images += clock.images
        self.seconds += clock.end - clock.start
        self.wait += clock.wait

    def images_per_s(self) -> float:
        return self.images / self.seconds

    def wait_share(self) -> float:
        return self.wait / self.seconds


def training_device(trainer: Any) -> torch.device:
    accelerator = str(trainer.accelerator)
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The bare loops' counterpart of the trainer's ``precision`` (``bf16-mixed``, ``16-mixed`` or full)."""
    dtypes = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
    if str(precision) not in dtypes:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtypes[str(precision)])


def bare_loop(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Any],
    clock: StepClock,
    steps: int,
    precision: str,
    prepare: Callable[[Any], Any] | None = None,
) -> None:
    """The module's training step in a plain loop (step, backward, update) over ``batches``; ``prepare`` moves a
    loader's batch to the device and makes its images the network's input, as Lightning does."""
    module.train()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # the step logs; without a Trainer it cannot
        for index in range(steps):
            fetch = time.perf_counter()
            batch = next(batches)
            if prepare is not None:
                batch = prepare(batch)
            clock.waited(time.perf_counter() - fetch)
            with autocast(clock.device, precision):
                loss = module.training_step(batch, index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clock.step_done(batch_images(batch))


def task_optimizer(module: nn.Module) -> torch.optim.Optimizer:
    """The task's optimizer over the module's parameter groups, as its ``configure_optimizers`` builds it."""
    from hydra.utils import instantiate

    from mnet_tasks.task_module import parameter_groups

    groups = parameter_groups(module, module.hparams.weight_decay)
    return instantiate(module.hparams.optimizer, _partial_=True)(groups)


def lightning_loop(cfg: Any, module: nn.Module, datamodule: Any, clock: StepClock, steps: int) -> None:
    """Lightning's fit with the configured trainer and the task's own training step; no validation, progress bar,
    logger or checkpoints. ``data_wait`` here is the time between one step's end and the next one's start."""
    import pytorch_lightning as pl

    from mnet_tasks.run import build_trainer

    class ClockCallback(pl.Callback):
        def __init__(self) -> None:
            self.ended: float | None = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.ended is not None:
                clock.waited(time.perf_counter() - self.ended)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            clock.step_done(batch_images(batch))
            self.ended = time.perf_counter()

    trainer = build_trainer(
        cfg.trainer,
        [ClockCallback()],
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)


def endless(loader: Any) -> Iterator[Any]:
    return itertools.chain.from_iterable(itertools.repeat(loader))


def training_throughput(
    overrides: Sequence[str],
    steps: int,
    warmup: int,
    workers: int,
    run_epochs: int = 0,
    compiled: bool = False,
    rounds: int = 3,
) -> list[dict[str, Any]]:
    """Images/s of every loop (module docstring) on the task of ``overrides`` (the quick start by default), each
    timed for ``steps`` steps after ``warmup`` untimed ones in each of ``rounds`` turns; ``compiled``: Lightning's
    loop once more with ``trainer.compile=true``."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from mnet_tasks.run import run
    from mnet_tasks.task_module import build_task

    with tempfile.TemporaryDirectory() as workdir:
        cfg = compose_config([*overrides, f"data.num_workers={workers}", f"paths.output_dir={workdir}"])
        device, precision = training_device(cfg.trainer), str(cfg.trainer.precision)
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        trainer_format = torch.channels_last if cfg.trainer.get("channels_last", True) else torch.contiguous_format

        def fresh_module(memory_format: torch.memory_format) -> nn.Module:
            pl.seed_everything(cfg.seed, verbose=False)
            module = build_task(cfg, **datamodule.head_kwargs()).to(device, memory_format=memory_format)
            module.memory_format = memory_format
            return module

        def prepare_on(module: nn.Module) -> Callable[[Any], Any]:
            def prepare(batch: Any) -> Any:
                return module.on_after_batch_transfer(move_data_to_device(batch, device), 0)

            return prepare

        def bare_turns(memory_format: torch.memory_format, batches: Iterator[Any] | None) -> Callable[..., None]:
            """Turns of one bare loop: over ``batches`` prepared in advance, or (None) fed by the task's loader."""
            module = fresh_module(memory_format)
            optimizer = task_optimizer(module)
            prepare = None
            if batches is None:
                batches, prepare = endless(datamodule.train_dataloader()), prepare_on(module)
            else:
                batches = itertools.cycle([prepare_on(module)(batch) for batch in batches])
            return lambda clock, count: bare_loop(module, optimizer, batches, clock, count, precision, prepare)

        def lightning_turns(compile_option: bool) -> Callable[..., None]:
            def turn(clock: StepClock, count: int) -> None:
                cfg.trainer.compile = compile_option
                module = fresh_module(torch.contiguous_format)  # the trainer's TrainingSpeed callback sets the layout
                lightning_loop(cfg, module, datamodule, clock, count)

            return turn

        # prepared batches: drawn once through the real pipeline, then reused from memory
        drawn = list(itertools.islice(endless(datamodule.train_dataloader()), min(steps + warmup, 8)))
        loops = {
            STEP_ANCHOR: bare_turns(torch.channels_last, drawn),
            "bare step NCHW": bare_turns(torch.contiguous_format, drawn),
            LOOP_ANCHOR: bare_turns(trainer_format, None),
            "lightning": lightning_turns(False),
        }
        if compiled:
            loops["lightning + compile"] = lightning_turns(True)
        totals = {name: LoopTotals() for name in loops}

        def take_turn(name: str) -> None:
            clock = StepClock(warmup, device)
            loops[name](clock, warmup + steps)
            totals[name].add(clock)

        for _ in range(rounds):
            for name in loops:
                take_turn(name)
        run_images_per_s = None
        if run_epochs > 0:
            run_cfg = compose_config(
                [
                    *overrides,
                    f"data.num_workers={workers}",
                    f"paths.output_dir={Path(workdir) / 'run'}",
                    f"trainer.max_epochs={run_epochs}",
                ]
            )
            take_turn(STEP_ANCHOR)
            run_images_per_s = run(run_cfg)["train_images_per_s"]
            take_turn(STEP_ANCHOR)

    def row(loop: str, images_per_s: float, memory_format: torch.memory_format, **timing: Any) -> dict[str, Any]:
        return {
            "loop": loop,
            "model": f"{cfg.task.name} MobileNetV1 a={cfg.backbone.alpha}",
            "input_size": cfg.input_size,
            "batch_size": cfg.data.batch_size,
            "device": device.type,
            "precision": precision,
            "memory_format": "channels_last" if memory_format == torch.channels_last else "NCHW",
            "workers": workers,
            "threads": torch.get_num_threads(),
            "images_per_s": images_per_s,
            **timing,
        }

    layouts = {STEP_ANCHOR: torch.channels_last, "bare step NCHW": torch.contiguous_format}
    rows = [
        row(
            name,
            total.images_per_s(),
            layouts.get(name, trainer_format),
            steps=total.steps,
            data_wait=None if name in layouts else total.wait_share(),
        )
        for name, total in totals.items()
    ]
    if run_images_per_s is not None:
        rows.append(row("run", run_images_per_s, trainer_format, steps=None, data_wait=None))
    step, loop = (totals[name].images_per_s() for name in (STEP_ANCHOR, LOOP_ANCHOR))
    for entry in rows:
        entry["vs_step"] = entry["images_per_s"] / step
        entry["vs_loop"] = entry["images_per_s"] / loop if entry["loop"].startswith(("lightning", "run")) else None
    return rows


# --- loader ---


def write_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs of ImageNet's typical size (500x375 or 375x500, quality 90) with photo-like content (smooth
    colour fields and fine grain, which JPEG does not compress away)."""
    import cv2

    generator = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        width, height = (500, 375) if index % 4 else (375, 500)
        coarse = generator.integers(0, 256, (8, 10, 3), dtype=np.uint8)
        field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        photo = np.clip(field + generator.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"photo_{index:04d}.jpg")
        Image.fromarray(photo).save(paths[-1], quality=90)
    return paths


def time_per_image(work: Callable[[Path], Any], paths: Sequence[Path], rounds: int) -> float:
    """Median over ``rounds`` passes of the seconds per image of ``work`` (one warm-up pass first)."""
    for path in paths:
        work(path)
    passes = []
    for _ in range(rounds):
        start = time.perf_counter()
        for path in paths:
            work(path)
        passes.append((time.perf_counter() - start) / len(paths))
    return statistics.median(passes)


def pipeline_call(dataset: Any) -> Callable[[Path], Any]:
    """One image through a dataset's decode and transform, as its ``__getitem__`` runs them (boxes left empty for a
    detection pipeline)."""
    from mnet_tasks.data.images import read_rgb

    extra = {"bboxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}
    needs_boxes = "bboxes" in getattr(dataset.transform, "processors", {})
    decode_side = getattr(dataset, "decode_side", None)

    def call(path: Path) -> Any:
        return dataset.transform(image=read_rgb(path, decode_side), **(extra if needs_boxes else {}))["image"]

    return call


def loader_throughput(overrides: Sequence[str], images: int, rounds: int) -> list[dict[str, Any]]:
    """Milliseconds and images/s per image in this process for PIL's full decode (the anchor) and the task's
    training and validation pipelines, on ``images`` ImageNet-size JPEGs."""
    from hydra.utils import instantiate

    from mnet_tasks.data.images import read_rgb

    with tempfile.TemporaryDirectory() as workdir:
        cfg = compose_config([*overrides, f"paths.output_dir={workdir}"])
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        paths = write_photos(Path(workdir), images)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one worker: DataLoader workers run one thread each
        try:
            timed = {
                "PIL decode (full size)": time_per_image(read_rgb, paths, rounds),
                "train pipeline": time_per_image(pipeline_call(datamodule.train_set), paths, rounds),
                "val pipeline": time_per_image(pipeline_call(datamodule.val_set), paths, rounds),
            }
        finally:
            torch.set_num_threads(threads)
    decode = timed["PIL decode (full size)"]
    return [
        {
            "pipeline": name,
            "input_size": cfg.input_size,
            "images": len(paths),
            "ms_per_image": 1000 * seconds,
            "images_per_s": 1 / seconds,
            "vs_decode": decode / seconds,
        }
        for name, seconds in timed.items()
    ]


def limiting_part(loader: Sequence[dict[str, Any]], training: Sequence[dict[str, Any]], workers: int) -> str:
    """Which of the loader and the training step limits a run: the training pipeline's img/s times the workers
    beside the bare step's img/s."""
    per_worker = next(row["images_per_s"] for row in loader if row["pipeline"] == "train pipeline")
    step = next(row["images_per_s"] for row in training if row["loop"] == STEP_ANCHOR)
    feeds = per_worker * max(1, workers)
    limit = "the loader" if feeds < step else "the training step"
    return (
        f"{max(1, workers)} worker(s) x {per_worker:.0f} img/s = {feeds:.0f} img/s of training images against the "
        f"step's {step:.0f} img/s: {limit} limits a run (on a machine whose workers do not share the step's cores)"
    )
