"""The checkpoints the default callbacks keep: the best epoch, and last.ckpt to resume from."""

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mnet_tasks.config import compose_config


class ScoreFallsAfterFirstEpoch(pl.LightningModule):
    """Logs val/score 1.0 in epoch 0 and 0.0 after it: epoch 0 stays the best."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", 1.0 if self.current_epoch == 0 else 0.0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_last_checkpoint_follows_every_epoch_even_when_the_metric_does_not_improve(tmp_path):
    cfg = compose_config(["task.monitor=val/score", "task.monitor_mode=max", f"paths.output_dir={tmp_path}"])
    savers = [instantiate(c) for c in cfg.callbacks.values() if c._target_.endswith("ModelCheckpoint")]
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = pl.Trainer(
        max_epochs=3, callbacks=savers, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(ScoreFallsAfterFirstEpoch(), loader, loader)

    best = next(s for s in savers if isinstance(s, ModelCheckpoint) and s.monitor == "val/score")
    assert best.best_model_path == str(tmp_path / "checkpoints" / "epoch000.ckpt")
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 6)  # the final epoch, not the best one
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]
