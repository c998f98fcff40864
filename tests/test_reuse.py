"""The backbone in someone else's project: plain PyTorch and a hand-written LightningModule, no Hydra."""

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from mnet_tasks import MobileNetV1


class TinyClassifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = MobileNetV1(alpha=0.25, num_classes=2, drop_rate=0.0)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = torch.nn.functional.cross_entropy(self.net(images), labels)
        self.log("loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def test_a_users_lightning_module_learns_with_the_backbone():
    torch.manual_seed(0)
    # two classes told apart by the colour of a square placed anywhere: red (0) or blue (1)
    images = torch.randn(64, 3, 32, 32) * 0.3
    labels = torch.arange(64) % 2
    for i, (y, x) in enumerate(torch.randint(0, 20, (64, 2)).tolist()):
        images[i, 2 * labels[i], y : y + 12, x : x + 12] += 2.0
    loader = DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=True)
    model = TinyClassifier()
    trainer = pl.Trainer(
        max_epochs=12, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(model, loader)
    # chance-level cross-entropy is ln 2 = 0.69; the last epoch's mean must be far below it
    assert trainer.callback_metrics["loss"] < 0.2
    model.eval()
    assert model.net(images[:3]).shape == (3, 2)
