"""Map-style datasets of face images that fetch whole batches at once."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, default_collate

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # uint8 images, labels, dataset indices


class InMemoryFaceDataset(Dataset):
    """uint8 images (N, 3, H, W) and int64 labels held in memory.

    ``__getitems__`` serves a whole batch with one tensor gather (the DataLoader uses it when the
    sampler yields index lists), so batching costs no per-image Python work.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Batch:
        return self.images[i], self.labels[i], torch.tensor(i)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], self.labels[idx], idx


def collate_batch(samples):
    """Pass through batches built by ``__getitems__``; fall back to ``default_collate``."""
    if isinstance(samples, tuple) and len(samples) == 3 and isinstance(samples[0], torch.Tensor):
        return samples
    return default_collate(samples)
