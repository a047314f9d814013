"""Map-style datasets of face images that fetch whole batches at once."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from facenet_pl.data.images import DEFAULT_FIT

log = logging.getLogger(__name__)

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


def take(sources: Sequence, rows) -> Sequence:
    """The items ``rows`` of a list of image sources: file paths, or a sequence that selects without reading
    (``take``, e.g. :class:`facenet_pl.data.recordio.RecordImages`)."""
    if hasattr(sources, "take"):
        return sources.take(rows)
    return [sources[i] for i in np.asarray(rows).tolist()]


def read_source(source) -> bytes:
    """The encoded bytes of an image source: a file path, or a file object (a RecordIO record's payload)."""
    if hasattr(source, "getvalue"):
        return source.getvalue()
    with open(source, "rb") as f:
        return f.read()


def collate_batch(samples):
    """Pass through batches built by ``__getitems__``; fall back to ``default_collate``."""
    if isinstance(samples, tuple) and len(samples) == 3 and isinstance(samples[0], torch.Tensor | list):
        return samples  # a list: encoded files, decoded on the device (facenet_pl.data.device_decode)
    return default_collate(samples)


class FileFaceDataset(Dataset):
    """Images decoded from their files each time they are drawn (``data.cache=false``): for data sets that do
    not fit on disk once decoded. Run it with DataLoader workers: ``__getitems__`` decodes one whole batch in
    the worker that fetches it, so ``data.num_workers`` batches decode in parallel while the model trains.

    A file that cannot be decoded is replaced by the next readable image of the same identity (in file order,
    so the batch still holds K images of that person and the draw stays deterministic) and counted; the
    dataset index returned is the one actually decoded.
    """

    def __init__(
        self,
        paths: Sequence,
        labels,
        size: int,
        crop: int | None = None,
        fit: str = DEFAULT_FIT,
        grayscale: bool = False,
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} files but {len(labels)} labels")
        self.paths = paths if hasattr(paths, "take") else [str(p) for p in paths]  # files, or records read on access
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.size, self.crop, self.fit, self.grayscale = size, crop, fit, grayscale
        lab = self.labels.numpy()
        order = np.argsort(lab, kind="stable")
        self._order = order  # dataset indices grouped by identity, file order inside
        self._pos = np.empty(len(lab), np.int64)
        self._pos[order] = np.arange(len(lab))
        counts = np.bincount(lab) if len(lab) else np.zeros(0, np.int64)
        self._start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._count = counts
        #: Files found unreadable by this process (each DataLoader worker counts its own).
        self.unreadable: set[int] = set()

    def __len__(self) -> int:
        return len(self.labels)

    def _load(self, i: int) -> tuple[torch.Tensor, int]:
        from facenet_pl.data.images import load_image

        lab = int(self.labels[i])
        start, count, pos = self._start[lab], self._count[lab], self._pos[i] - self._start[lab]
        for step in range(count):
            j = int(self._order[start + (pos + step) % count])
            img = load_image(self.paths[j], self.size, self.crop, self.fit, self.grayscale)
            if img is not None:
                return torch.from_numpy(img), j
            if j not in self.unreadable:
                self.unreadable.add(j)
                log.warning(
                    "cannot decode %s: using another image of the same identity instead (%d unreadable so far in "
                    "this process); exclude it with data.exclude",
                    self.paths[j],
                    len(self.unreadable),
                )
        raise ValueError(
            f"no image of identity {lab} can be decoded (e.g. {self.paths[i]}): remove its folder or exclude it "
            "with data.exclude"
        )

    def __getitem__(self, i: int) -> Batch:
        img, j = self._load(int(i))
        return img, self.labels[j], torch.tensor(j)

    def _batch(self, images: list[torch.Tensor]):
        """The images of one batch as the DataLoader passes them on: one uint8 (N, 3, S, S) tensor."""
        return torch.stack(images)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        loaded = [self._load(int(i)) for i in indices]
        idx = torch.tensor([j for _, j in loaded], dtype=torch.long)
        return self._batch([img for img, _ in loaded]), self.labels[idx], idx
