"""Embedding networks."""

from facenet_pl.models.embedding import FaceNetEmbedding, create_backbone
from facenet_pl.models.small_cnn import SmallFaceCNN

__all__ = ["FaceNetEmbedding", "SmallFaceCNN", "create_backbone"]
