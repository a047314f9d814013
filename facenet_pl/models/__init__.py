"""Embedding networks."""

from facenet_pl.models.embedding import FaceNetEmbedding, compile_network, create_backbone
from facenet_pl.models.small_cnn import SmallFaceCNN

__all__ = ["FaceNetEmbedding", "SmallFaceCNN", "compile_network", "create_backbone"]
