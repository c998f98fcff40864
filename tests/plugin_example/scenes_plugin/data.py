"""Scene folders read with torchvision alone: a DataModule that owes nothing to mnet_tasks but the contract
(``dataset_name`` and ``head_kwargs()``)."""

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2


class SceneFolders(pl.LightningDataModule):
    def __init__(self, root, image_size=224, batch_size=32, num_workers=0):
        super().__init__()
        self.root = Path(root)
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.dataset_name = self.root.name

    def head_kwargs(self):
        return {"num_classes": len(datasets.folder.find_classes(self.root / "train")[0])}

    def setup(self, stage=None):
        def transform(train):
            resize = v2.RandomResizedCrop(self.image_size) if train else v2.Resize((self.image_size, self.image_size))
            normalize = v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
            return v2.Compose([v2.ToImage(), resize, v2.ToDtype(torch.float32, scale=True), normalize])

        self.train_set = datasets.ImageFolder(self.root / "train", transform(train=True))
        self.val_set = datasets.ImageFolder(self.root / "val", transform(train=False))

    def train_dataloader(self):
        return DataLoader(self.train_set, self.batch_size, shuffle=True, num_workers=self.num_workers)

    def val_dataloader(self):
        return DataLoader(self.val_set, self.batch_size, num_workers=self.num_workers)
