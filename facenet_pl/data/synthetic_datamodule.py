"""``data=synthetic``: the built-in procedurally rendered faces (see :mod:`facenet_pl.data.synthetic`)."""

from __future__ import annotations

import logging

from facenet_pl.data.datamodule import FaceDataModule
from facenet_pl.data.pairs import VerificationSet
from facenet_pl.data.synthetic import SyntheticFaceConfig, SyntheticFaceDataset
from facenet_pl.utils.errors import ConfigError

log = logging.getLogger(__name__)


class SyntheticFaceDataModule(FaceDataModule):
    """The built-in data: procedurally rendered identities (see :mod:`facenet_pl.data.synthetic`).

    Train, validation and test identities are rendered from different seeds: three disjoint sets of people.
    """

    def __init__(
        self,
        image_size: int = 64,
        train_identities: int = 400,
        train_images_per_identity: int | None = None,
        val_identities: int = 200,
        val_images_per_identity: int = 10,
        test_identities: int = 200,
        test_images_per_identity: int = 10,
        val_folds: int = 10,
        val_pairs_per_fold: int = 150,
        difficulty: float = 1.0,
        occlusion_prob: float = 0.3,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if train_images_per_identity is None:  # enough that a PK batch's k images of a person are distinct
            train_images_per_identity = max(10, self.k)
        if image_size < 16:
            raise ConfigError(f"data.image_size must be >= 16, got {image_size}")
        if min(train_images_per_identity, val_images_per_identity, test_images_per_identity) < 2:
            raise ConfigError(
                "data.train_images_per_identity, data.val_images_per_identity and "
                "data.test_images_per_identity must be >= 2"
            )
        self.cfg = SyntheticFaceConfig(image_size=image_size, difficulty=difficulty, occlusion_prob=occlusion_prob)
        self.train_identities, self.train_images_per_identity = train_identities, train_images_per_identity
        self.held_out = {
            "val": (val_identities, val_images_per_identity),
            "test": (test_identities, test_images_per_identity),
        }
        self.val_folds, self.val_pairs_per_fold = val_folds, val_pairs_per_fold

    def _pairs(self, split: str) -> VerificationSet | None:
        n_ids, per_id = self.held_out[split]
        if n_ids == 0:
            return None
        ds = SyntheticFaceDataset(n_ids, per_id, self.seed, split, self.cfg)
        return VerificationSet.draw(
            ds,
            ds.labels.numpy(),
            [f"synthetic-{split}-{self.seed}-{i}" for i in range(n_ids)],
            self.val_folds,
            self.val_pairs_per_fold,
            self.seed,
            name=f"synthetic {split} identities (seed {self.seed})",
            key=f"data.{split}_identities",
        )

    def setup(self, stage: str | None = None) -> None:
        """Nothing is rendered here: each image is drawn the first time a batch asks for it."""
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = SyntheticFaceDataset(
                self.train_identities, self.train_images_per_identity, self.seed, "train", self.cfg
            )
            log.info(
                "synthetic faces: %d train images (%d ids) at %dpx, rendered as batches ask for them",
                len(self.train_set),
                self.train_identities,
                self.cfg.image_size,
            )
        if self.val_split is None and stage in (None, "fit", "validate"):
            self.val_split = self._pairs("val")
        if self.test_split is None and stage in (None, "test"):
            self.test_split = self._pairs("test")
