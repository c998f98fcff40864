"""ImageNet-style classification: the task module, ImageFolder data and the synthetic shapes."""

from mnet_tasks.tasks.classification.data import ImageFolderDataModule, ImageFolderDataset
from mnet_tasks.tasks.classification.module import ClassificationTask

__all__ = ["ClassificationTask", "ImageFolderDataModule", "ImageFolderDataset"]
