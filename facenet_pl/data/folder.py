"""``data=folder``: any identity-folder dataset (CASIA-WebFace, VGGFace2 layout: root/<identity>/<images>)."""

from __future__ import annotations

import logging

import numpy as np

from facenet_pl.data.datamodule import FaceDataModule
from facenet_pl.data.datasets import InMemoryFaceDataset
from facenet_pl.data.decode_cache import cached_decode
from facenet_pl.data.images import report_unreadable, scan_identity_folders
from facenet_pl.data.pairs import VerificationSet
from facenet_pl.errors import ConfigError

log = logging.getLogger(__name__)


def _count(value: int | float, n: int, key: str) -> int:
    """``data.val_identities``-style setting -> a number of identities: an int, or a fraction of ``n`` in (0, 1)."""
    if isinstance(value, float) and 0 < value < 1:
        return max(int(round(value * n)), 1)
    if value < 0 or value != int(value):
        raise ConfigError(f"{key}={value}: give a number of identities (an integer >= 0) or a fraction in (0, 1)")
    return int(value)


class FolderDataModule(FaceDataModule):
    """Identity folders, decoded once into a uint8 cache; three identity-disjoint splits.

    ``val_identities`` identities (chosen by seed, among those with >= 2 readable images) give the validation
    pairs (best checkpoint, threshold), ``test_identities`` others the test pairs, the rest train. Either may be
    a fraction of the identities (0.1) and ``val_identities=0`` means no validation (the last epoch is kept).
    :meth:`whole_folder_split` makes every identity a test identity (evaluate a folder the model never saw).
    Unreadable files are skipped and counted with a warning.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 112,
        crop_size: int | None = None,
        val_identities: int | float = 100,
        test_identities: int | float = 100,
        val_folds: int = 10,
        val_pairs_per_fold: int = 100,
        min_images: int = 2,
        cache_dir: str | None = ".cache/facenet_pl",
        decode_workers: int = 2,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.root, self.image_size, self.crop_size = root, image_size, crop_size
        self.val_identities, self.test_identities = val_identities, test_identities
        self.val_folds, self.val_pairs_per_fold = val_folds, val_pairs_per_fold
        self.min_images, self.cache_dir, self.decode_workers = min_images, cache_dir, decode_workers
        self._decoded: tuple | None = None

    def _decode(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """(images, labels of readable rows, readable rows, identity names), decoded once."""
        if self._decoded is None:
            paths, labels, names = scan_identity_folders(self.root, self.min_images)
            images, ok = cached_decode(paths, self.image_size, self.crop_size, self.cache_dir,
                                       self.decode_workers, source=str(self.root))
            report_unreadable(paths, ok, f"data.root={self.root}")
            rows = np.flatnonzero(ok)
            self._decoded = images, labels[rows], rows, names
        return self._decoded

    def _pairs(self, images, labels, rows, names, ids, what: str, key: str) -> VerificationSet:
        keep = np.isin(labels, ids)
        return VerificationSet.draw(InMemoryFaceDataset(images, labels[keep], rows=rows[keep]), labels[keep],
                                    [names[i] for i in np.sort(ids)], self.val_folds, self.val_pairs_per_fold,
                                    self.seed, name=f"{what} of {self.root}", key=key)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, labels, rows, names = self._decode()
        ids, counts = np.unique(labels, return_counts=True)
        ids = ids[counts >= 2]
        n_val = _count(self.val_identities, len(ids), "data.val_identities")
        n_test = _count(self.test_identities, len(ids), "data.test_identities")
        if len(ids) < n_val + n_test + 2:
            raise ConfigError(
                f"data.root={self.root} has {len(ids)} identities with >= 2 readable images; training needs more "
                f"than data.val_identities={n_val} + data.test_identities={n_test} + 2. Lower them (a fraction such "
                "as 0.15 works too), or evaluate a trained model on the whole folder: python eval.py ckpt_path=... "
                "data=folder data.root=... split=all"
            )
        order = np.random.default_rng(self.seed).permutation(ids)
        val_ids, test_ids = order[:n_val], order[n_val:n_val + n_test]
        keep_train = np.isin(labels, ids) & ~np.isin(labels, order[:n_val + n_test])
        self.train_set = InMemoryFaceDataset(images, labels[keep_train], rows=rows[keep_train])
        self.val_split = self._pairs(images, labels, rows, names, val_ids, "validation identities",
                                     "data.val_identities") if n_val else None
        self.test_split = self._pairs(images, labels, rows, names, test_ids, "test identities",
                                      "data.test_identities") if n_test else None
        log.info("folder %s: %d train images (%d ids), %d val ids, %d test ids", self.root, int(keep_train.sum()),
                 len(ids) - n_val - n_test, n_val, n_test)

    def whole_folder_split(self) -> VerificationSet:
        """Every identity with >= 2 readable images as test identities: pairs over the whole folder."""
        images, labels, rows, names = self._decode()
        ids, counts = np.unique(labels, return_counts=True)
        return self._pairs(images, labels, rows, names, ids[counts >= 2], "all identities",
                           "people with >= 2 readable images")
