"""Data: the PK sampler, datasets, verification pairs and DataModules."""

from facenet_pl.data.datamodule import FaceDataModule, SyntheticFaceDataModule
from facenet_pl.data.datasets import InMemoryFaceDataset
from facenet_pl.data.folder import FolderDataModule
from facenet_pl.data.lfw_datamodule import LFWDataModule
from facenet_pl.data.pairs import make_pairs
from facenet_pl.data.samplers import PKSampler
from facenet_pl.data.synthetic import SyntheticFaceDataset

__all__ = [
    "FaceDataModule",
    "FolderDataModule",
    "InMemoryFaceDataset",
    "LFWDataModule",
    "PKSampler",
    "SyntheticFaceDataModule",
    "SyntheticFaceDataset",
    "make_pairs",
]
