"""Datasets, transforms and the data module shared by the tasks."""

from mnet_tasks.data.imagefolder import ImageFolderDataModule, ImageFolderDataset
from mnet_tasks.data.images import ImageReadError, read_rgb
from mnet_tasks.data.synthetic import generate_shapes

__all__ = ["ImageFolderDataModule", "ImageFolderDataset", "ImageReadError", "generate_shapes", "read_rgb"]
