"""A NaN/inf training loss: stops the run naming the step (task.nonfinite_loss=stop) or drops the batch (skip)."""

import math

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from mnet_tasks.config import compose_config
from mnet_tasks.task_module import build_task


def _fit_with_nan(quick, tmp_path, nan_batches: set[int], overrides: list[str], steps: int = 4):
    """Train the quick classifier for ``steps`` batches of 4 images; the loss of ``nan_batches`` (global batch
    numbers) is NaN, through the network's output, as a diverging model would make it."""
    cfg = compose_config([*quick, "data.batch_size=4", f"paths.output_dir={tmp_path}", *overrides])
    pl.seed_everything(0)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    module = build_task(cfg, **datamodule.head_kwargs())
    network, batches = module.forward, []

    def poisoned(images: torch.Tensor) -> torch.Tensor:
        if module.training:
            batches.append(len(batches))
            if batches[-1] in nan_batches:
                return network(images) * math.nan
        return network(images)

    module.forward = poisoned
    trainer = pl.Trainer(
        max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, datamodule=datamodule)
    return module, trainer


def test_nonfinite_loss_stops_naming_the_step(quick, tmp_path):
    with pytest.raises(FloatingPointError, match=r"loss is nan .* at global step 2 \(epoch 0, batch 2\).*nonfinite"):
        _fit_with_nan(quick, tmp_path, {2}, [])


def test_nonfinite_loss_skip_drops_the_batch_and_trains_on(quick, tmp_path):
    module, trainer = _fit_with_nan(quick, tmp_path, {1, 3}, ["task.nonfinite_loss=skip"], steps=5)
    assert module.skipped_batches == 2
    assert trainer.global_step == 5  # skipped batches still count as steps: the schedule stays on time
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert trainer.callback_metrics["train/skipped_batches"] == 2


def test_too_many_consecutive_skips_stop_the_run(quick, tmp_path):
    overrides = ["task.nonfinite_loss=skip", "task.max_nonfinite_skips=2"]
    with pytest.raises(FloatingPointError, match=r"not finite for 3 consecutive batches.*max_nonfinite_skips=2"):
        _fit_with_nan(quick, tmp_path, {1, 2, 3}, overrides, steps=6)


def test_unknown_action_names_the_key(quick):
    with pytest.raises(ValueError, match=r"task\.nonfinite_loss must be stop or skip, got 'ignore'"):
        build_task(compose_config([*quick, "task.nonfinite_loss=ignore"]), num_classes=4)
