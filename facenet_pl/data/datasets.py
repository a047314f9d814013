"""Map-style datasets of face images that fetch whole batches at once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # uint8 images, labels, dataset indices


class InMemoryFaceDataset(Dataset):
    """uint8 images (N, 3, H, W) and int64 labels: a torch tensor, or a numpy (memory-mapped) array.

    ``rows`` maps dataset positions to rows of ``images``, so several datasets can share one
    memory-mapped decode cache. ``__getitems__`` serves a whole batch with one gather (the
    DataLoader uses it when the sampler yields index lists): no per-image Python work.
    """

    def __init__(self, images, labels, rows=None) -> None:
        if images.ndim != 4 or images.dtype not in (torch.uint8, np.uint8):
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        n = len(images) if self.rows is None else len(self.rows)
        if n != len(labels):
            raise ValueError(f"{n} images but {len(labels)} labels")
        self.images = images
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def _gather(self, idx: np.ndarray) -> torch.Tensor:
        rows = idx if self.rows is None else self.rows[idx]
        if isinstance(self.images, torch.Tensor):
            return self.images[torch.from_numpy(rows)]
        return torch.from_numpy(np.ascontiguousarray(self.images[rows]))

    def __getitem__(self, i: int) -> Batch:
        return self._gather(np.array([i]))[0], self.labels[i], torch.tensor(i)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        return self._gather(idx), self.labels[torch.from_numpy(idx)], torch.from_numpy(idx)


def collate_batch(samples):
    """Pass through batches built by ``__getitems__``; fall back to ``default_collate``."""
    if isinstance(samples, tuple) and len(samples) == 3 and isinstance(samples[0], torch.Tensor):
        return samples
    return default_collate(samples)
