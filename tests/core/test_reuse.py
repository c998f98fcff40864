"""The backbone in someone else's project: plain PyTorch and a hand-written LightningModule, no Hydra."""

import pytest
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


def coloured_squares(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes told apart by the colour of a square placed anywhere on noise: red (0) or blue (1)."""
    images = torch.randn(count, 3, 32, 32) * 0.3
    labels = torch.arange(count) % 2
    for i, (y, x) in enumerate(torch.randint(0, 20, (count, 2)).tolist()):
        images[i, 2 * labels[i], y : y + 12, x : x + 12] += 2.0
    return images, labels


@pytest.mark.learning
def test_a_users_lightning_module_learns_with_the_backbone(learning_seed, bars):
    torch.manual_seed(learning_seed)
    images, labels = coloured_squares(64)
    loader = DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=True)
    model = TinyClassifier()
    trainer = pl.Trainer(
        max_epochs=20, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(model, loader)
    model.eval()
    with torch.no_grad():
        logits = model.net(images)  # in eval mode: BatchNorm's running statistics, not the batch's
    assert logits.shape == (64, 2)
    # chance-level cross-entropy is ln 2 = 0.69 and chance accuracy 0.5
    bars.measure("last epoch's train loss", trainer.callback_metrics["loss"], at_most=0.3)
    bars.measure("eval-mode accuracy", (logits.argmax(1) == labels).float().mean(), at_least=0.9)
    bars.check()
