"""``run(cfg)``: the one place that wires config, data, task module and trainer together for a job."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from mnet_tasks.callbacks import ResumeState, TrainingSpeed, TrainingThroughput, ValidationHistory
from mnet_tasks.checkpoints import load_checkpoint
from mnet_tasks.config import ConfigError
from mnet_tasks.cost import profile_model
from mnet_tasks.data.bad_files import BadFileReport
from mnet_tasks.registry import RegistryError, task_class_of_target
from mnet_tasks.report import write_run_report
from mnet_tasks.task_module import NONFINITE_LOSS_ACTIONS, TaskModule, build_task

log = logging.getLogger(__name__)


# Integer keys users set most, and their least allowed value (trainer.max_epochs=-1: no limit, as in Lightning).
INTEGER_KEYS = {"data.batch_size": 1, "data.num_workers": 0, "trainer.max_epochs": -1, "seed": 0}


def validate_config(cfg: DictConfig) -> None:
    """Fail fast, naming the key, before data is generated or read."""
    alpha = cfg.backbone.alpha
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        raise ConfigError(f"backbone.alpha (width multiplier) must be a number > 0, got {alpha!r}")
    cfg.input_size  # noqa: B018 - resolving it runs the rho/resolution checks
    for key, minimum in INTEGER_KEYS.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    lr = OmegaConf.select(cfg, "task.optimizer.lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
        raise ConfigError(f"task.optimizer.lr must be a number > 0, got {lr!r}")
    configured_task_class(cfg).check_config(cfg)
    if cfg.task.get("nonfinite_loss", "stop") not in NONFINITE_LOSS_ACTIONS:
        raise ConfigError(f"task.nonfinite_loss must be stop or skip, got {cfg.task.nonfinite_loss!r}")
    if not isinstance(cfg.task.get("error_analysis", True), bool):
        raise ConfigError(f"task.error_analysis must be true or false, got {cfg.task.error_analysis!r}")
    if cfg.ckpt_path is None and not cfg.train:
        raise ConfigError("train=false evaluates a checkpoint: set ckpt_path=/path/to/checkpoint.ckpt")
    if cfg.ckpt_path is not None:
        if not Path(cfg.ckpt_path).is_file():
            raise ConfigError(f"ckpt_path: no checkpoint file at {cfg.ckpt_path}")
        load_checkpoint(cfg.ckpt_path, "ckpt_path")


def configured_task_class(cfg: DictConfig) -> type:
    """The registered task class ``task._target_`` names, imported (but not built): its ``check_config`` runs
    before any data. Built-in tasks and plug-ins alike are found in the task registry."""
    target = str(cfg.task.get("_target_"))
    try:
        cls = task_class_of_target(target)
    except RegistryError as error:
        raise ConfigError(str(error)) from error
    if not issubclass(cls, TaskModule):
        raise ConfigError(
            f"task._target_={target} is registered but is not a TaskModule subclass (tests/plugin_example/README.md)"
        )
    return cls


def source_version() -> str:
    """Which code made a result: the git commit of the mnet_tasks source in a checkout, else the package version."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / ".git").exists():  # not an installed copy inside some other repository
        try:
            commit = subprocess.run(
                ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
            )
            if commit.returncode == 0:
                return commit.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return version("mnet_tasks")
    except PackageNotFoundError:
        return "unknown"


def latest_checkpoint(output_dir: Path) -> Path | None:
    """A run folder's newest checkpoint: ``interrupted.ckpt``, written when training stopped on an error or Ctrl-C
    (and removed when a run ends normally), else ``last.ckpt``, rewritten every epoch (and every N steps)."""
    folder = output_dir / "checkpoints"
    return next((path for path in (folder / "interrupted.ckpt", folder / "last.ckpt") if path.is_file()), None)


def resolve_last_checkpoint(cfg: DictConfig) -> None:
    """``ckpt_path=last`` means this run folder's latest checkpoint (:func:`latest_checkpoint`): resume a stopped
    run by running its command again with ``ckpt_path=last hydra.run.dir=<its run folder>``."""
    if cfg.ckpt_path != "last":
        return
    output_dir = Path(cfg.paths.output_dir)
    last = output_dir / "checkpoints" / "last.ckpt"
    if (latest := latest_checkpoint(output_dir)) is not None:
        cfg.ckpt_path = str(latest)
        return
    if (output_dir / "metrics.json").is_file():
        raise ConfigError(
            f"ckpt_path=last: the run in {output_dir} saved no checkpoint ({last} is missing): it stopped before its "
            "first one; run it afresh without ckpt_path=last"
        )
    raise ConfigError(
        f"ckpt_path=last: no checkpoint at {last}; to resume a run, add hydra.run.dir=<that run's folder>"
    )


def interrupted_hint(trainer: pl.Trainer, output_dir: Path) -> str:
    """Where an interrupted run stopped and how to go on, from the checkpoint it left (if any)."""
    where = f"training was interrupted at global step {trainer.global_step} (epoch {trainer.current_epoch})"
    if (latest := latest_checkpoint(output_dir)) is None:
        return f"{where}; no checkpoint was saved (callbacks.on_exception is off): start the run again"
    return f"{where}; resume from {latest} with the same command and ckpt_path=last hydra.run.dir={output_dir}"


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Callbacks and loggers: every entry with a ``_target_`` (``null`` entries switch one off)."""
    return [instantiate(entry) for entry in (group or {}).values() if entry and "_target_" in entry]


# Keys of the trainer group that are not pl.Trainer's: they configure the TrainingSpeed callback.
SPEED_KEYS = ("channels_last", "compile")


def build_trainer(trainer: DictConfig, callbacks: list[pl.Callback], **overrides: Any) -> pl.Trainer:
    """``pl.Trainer`` from the ``trainer`` group, with :class:`~mnet_tasks.callbacks.TrainingSpeed` from its speed
    keys (``channels_last``, ``compile``)."""
    options = OmegaConf.to_container(trainer, resolve=True)
    speed = TrainingSpeed(**{key: options.pop(key) for key in SPEED_KEYS if key in options})
    return instantiate(options, callbacks=[*callbacks, speed], **overrides)


def write_report_or_warn(output_dir: Path, cfg: DictConfig) -> str | None:
    """The run's ``report.html``, or None: a report that fails is a warning, never the run's error or result."""
    try:
        path = write_run_report(output_dir, cfg)
    except Exception:
        log.warning("no report written in %s", output_dir, exc_info=True)
        return None
    log.info("wrote %s", path)
    return str(path)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train (or evaluate) one job and write ``metrics.json`` in its output folder, whatever happens, then its
    ``report.html`` when ``report`` is on.

    Returns the metrics.json record (with ``report``, the page's path, when one was written). Errors are re-raised
    after the record says ``status: failed``.
    """
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    record: dict[str, Any] = {
        "task": cfg.task.name,
        "dataset": None,
        "split": "val",
        "mode": "train" if cfg.train else "eval",
        "alpha": cfg.backbone.alpha,
        "rho": cfg.backbone.rho,
        "input_size": None,
        "madds": None,
        "params": None,
        "monitor": cfg.task.monitor,
        "monitor_mode": cfg.task.monitor_mode,
        "metrics": {"final": {}, "best": {}},
        "best_epoch": None,
        "epochs": 0,
        "checkpoint": None,
        "checkpoint_bytes": None,
        "train_images_per_s": None,
        "commit": source_version(),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "status": "running",
        "error": None,
        "output_dir": str(output_dir),
    }
    try:
        resolve_last_checkpoint(cfg)
        validate_config(cfg)
        record["input_size"] = cfg.input_size
        pl.seed_everything(cfg.seed, workers=True)

        # Objects first, data second: a config that cannot build (no GPU, no data.root) fails before any I/O.
        history = ValidationHistory(cfg.task.monitor, cfg.task.monitor_mode)
        loggers = _instantiate_group(cfg.get("logger"))
        callbacks = _instantiate_group(cfg.get("callbacks"))
        if not loggers:  # Lightning refuses a learning-rate monitor that has no logger to write to
            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        throughput = TrainingThroughput()
        extra = [history, throughput, ResumeState(), BadFileReport(output_dir)]  # BadFileReport: data_report.json
        trainer = build_trainer(cfg.trainer, [*callbacks, *extra], logger=loggers or False)
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        record["dataset"] = datamodule.dataset_name
        module = build_task(cfg, **datamodule.head_kwargs())
        cost = profile_model(module, cfg.input_size)
        record.update(madds=cost.madds, params=cost.params)

        try:
            if cfg.train:
                trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
            else:
                trainer.validate(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
        except SystemExit:  # Lightning's answer to Ctrl-C, after the on_exception checkpoint
            if trainer.interrupted:
                raise KeyboardInterrupt(interrupted_hint(trainer, output_dir)) from None
            raise
        finally:
            for logger in trainer.loggers:
                logger.finalize("success" if trainer.state.status == "finished" else "failed")

        record["metrics"] = {"final": history.final, "best": history.best}
        record["best_epoch"] = history.best_epoch
        record["epochs"] = trainer.current_epoch
        record["train_images_per_s"] = throughput.median
        if not cfg.train:
            record["checkpoint"] = str(cfg.ckpt_path)
        elif (saver := trainer.checkpoint_callback) is not None:
            record["checkpoint"] = saver.best_model_path or saver.last_model_path or None
        if record["checkpoint"] and Path(record["checkpoint"]).is_file():
            record["checkpoint_bytes"] = Path(record["checkpoint"]).stat().st_size
        record["status"] = "completed"
        return record
    except BaseException as error:
        record["status"] = "failed"
        record["error"] = f"{type(error).__name__}: {error}"
        raise
    finally:
        record["duration_s"] = round(time.time() - started, 1)
        if rank_zero_only.rank == 0:  # under DDP every process runs this job; the folder is the job's
            (output_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
            log.info("wrote %s (status %s)", output_dir / "metrics.json", record["status"])
            if cfg.get("report", False):
                record["report"] = write_report_or_warn(output_dir, cfg)


def summary(record: dict[str, Any]) -> str:
    """A few lines for the end of a run: the result, the cost, where the files are."""
    cost = f"{record['madds'] / 1e6:.1f} M MAdds, {record['params'] / 1e6:.2f} M params"
    model = f"MobileNetV1 alpha={record['alpha']} rho={record['rho']} ({record['input_size']}px)"
    lines = [f"{record['task']} on {record['dataset']}: {model}, {cost}"]
    final, best = record["metrics"]["final"], record["metrics"]["best"]
    width = max(map(len, final), default=0)
    for name in sorted(final):
        line = f"  {name:<{width}} {final[name]:.4f}"
        if name in best and best[name] != final[name]:
            line += f"   (best epoch {record['best_epoch']}: {best[name]:.4f})"
        lines.append(line)
    if record.get("train_images_per_s"):
        lines.append(f"  training: {record['train_images_per_s']:.0f} images/s (median epoch, validation excluded)")
    lines.append(f"  run folder: {record['output_dir']}")
    if record.get("report"):
        lines.append(f"  report: {record['report']}")
    return "\n".join(lines)
