"""Fine-grained recognition (Stanford Dogs layout): classification's task module on split-list data, usually
fine-tuned from pretrained weights."""

from mnet_tasks.tasks.finegrained.data import SplitListDataModule

__all__ = ["SplitListDataModule"]
