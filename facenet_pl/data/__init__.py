"""Data: the PK sampler, datasets, verification pairs and DataModules.

The names below load on first use (PEP 562), so ``python -m facenet_pl.data.download`` and other torch-free
tools start without importing torch and Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "FaceDataModule": "facenet_pl.data.datamodule",
    "SyntheticFaceDataModule": "facenet_pl.data.synthetic_datamodule",
    "InMemoryFaceDataset": "facenet_pl.data.datasets",
    "FileFaceDataset": "facenet_pl.data.datasets",
    "FolderDataModule": "facenet_pl.data.folder",
    "LFWDataModule": "facenet_pl.data.lfw_datamodule",
    "make_pairs": "facenet_pl.data.pairs",
    "PKSampler": "facenet_pl.data.samplers",
    "RecDataModule": "facenet_pl.data.rec",
    "SyntheticFaceDataset": "facenet_pl.data.synthetic",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'facenet_pl.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
