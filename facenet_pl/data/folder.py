"""``data=folder``: any identity-folder dataset (CASIA-WebFace, VGGFace2 layout: root/<identity>/<images>)."""

from __future__ import annotations

import logging

import numpy as np

from facenet_pl.data.datamodule import FaceDataModule
from facenet_pl.data.datasets import InMemoryFaceDataset
from facenet_pl.data.images import cached_decode, report_unreadable, scan_identity_folders
from facenet_pl.data.pairs import make_pairs
from facenet_pl.errors import ConfigError

log = logging.getLogger(__name__)


class FolderDataModule(FaceDataModule):
    """Identity folders, decoded once into a uint8 cache; held-out identities give LFW-style pairs.

    ``val_identities`` identities (chosen by seed) are held out of training for validation pairs.
    Unreadable files are skipped and counted with a warning.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 112,
        crop_size: int | None = None,
        val_identities: int = 100,
        val_folds: int = 10,
        val_pairs_per_fold: int = 100,
        min_images: int = 2,
        cache_dir: str | None = ".cache/facenet_pl",
        decode_workers: int = 2,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.root, self.image_size, self.crop_size = root, image_size, crop_size
        self.val_identities, self.val_folds, self.val_pairs_per_fold = val_identities, val_folds, val_pairs_per_fold
        self.min_images, self.cache_dir, self.decode_workers = min_images, cache_dir, decode_workers

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        paths, labels, names = scan_identity_folders(self.root, self.min_images)
        images, ok = cached_decode(paths, self.image_size, self.crop_size, self.cache_dir, self.decode_workers)
        report_unreadable(paths, ok, f"data.root={self.root}")
        rows = np.flatnonzero(ok)
        labels = labels[rows]
        ids, counts = np.unique(labels, return_counts=True)
        ids = ids[counts >= 2]
        if len(ids) < self.val_identities + 2:
            raise ConfigError(
                f"data.root={self.root} has {len(ids)} identities with >= 2 readable images; need more than "
                f"data.val_identities={self.val_identities} + 2 (lower data.val_identities)"
            )
        rng = np.random.default_rng(self.seed)
        val_ids = rng.choice(ids, self.val_identities, replace=False)
        is_val = np.isin(labels, val_ids)
        keep_train = ~is_val & np.isin(labels, ids)
        self.train_set = InMemoryFaceDataset(images, labels[keep_train], rows=rows[keep_train])
        self.val_set = InMemoryFaceDataset(images, labels[is_val], rows=rows[is_val])
        self.val_pairs, self.val_issame = make_pairs(labels[is_val], self.val_folds, self.val_pairs_per_fold, self.seed)
        log.info("folder %s: %d train images (%d ids), %d val images (%d ids)", self.root, int(keep_train.sum()),
                 len(ids) - self.val_identities, int(is_val.sum()), self.val_identities)
