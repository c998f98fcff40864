"""Face attributes (CelebA layout), trained on labels or distilled from a teacher."""

from mnet_tasks.tasks.attributes.data import CelebADataModule
from mnet_tasks.tasks.attributes.module import AttributeTask

__all__ = ["AttributeTask", "CelebADataModule"]
