"""One validation epoch of an untrained task with its error analysis on: the cheapest run that writes
``analysis/`` (no training, no sanity check, no checkpoint), shared by the tests of each task's analysis."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate

from mnet_tasks.config import compose_config
from mnet_tasks.task_module import TaskModule, build_task


def validate_once(
    overrides: list[str], data_dir: Path, output_dir: Path, analysis: bool = True
) -> tuple[TaskModule, dict[str, float]]:
    """The module after one validation of the tiny config ``overrides`` (0.25 MobileNet-64) and the metrics it
    logged; the run folder is ``output_dir``."""
    cfg = compose_config(
        [
            "backbone.alpha=0.25",
            "backbone.resolution=64",
            "data.num_workers=0",
            *overrides,
            f"task.error_analysis={str(analysis).lower()}",
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={output_dir}",
        ]
    )
    pl.seed_everything(cfg.seed, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    module = build_task(cfg, **datamodule.head_kwargs())
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=output_dir,
    )
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return module, {name: float(value) for name, value in trainer.callback_metrics.items()}
