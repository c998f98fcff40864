"""Face embeddings (the paper's Table 14): trained on identities, or distilled from a teacher; LFW-style pairs."""

from mnet_tasks.tasks.face_embedding.data import FaceDataModule
from mnet_tasks.tasks.face_embedding.module import FaceEmbeddingTask

__all__ = ["FaceDataModule", "FaceEmbeddingTask"]
