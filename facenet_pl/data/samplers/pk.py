"""``PKSampler``: batches of P identities x K images, the batch layout online mining needs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from facenet_pl.data.samplers.base import EpochBatchSampler
from facenet_pl.utils.errors import ConfigError

FEW_IMAGES_POLICIES = ("replace", "skip")


def min_images_to_anchor(k: int, few_images: str) -> int:
    """Images an identity needs to be one of a PK batch's P: ``k`` when identities with fewer are skipped, else 2
    (one anchor-positive pair; the K are then drawn with replacement). The data plan counts identities by this too."""
    return k if few_images == "skip" else 2


class PKSampler(EpochBatchSampler):
    """Batch sampler yielding index lists of ``p`` identities x ``k`` images (+ ``extra_negatives``).

    - Identities with fewer than ``k`` images are drawn with replacement (``few_images="replace"``)
      or left out (``"skip"``); identities with a single image never anchor a batch.
    - ``extra_negatives`` images of further identities (one image each, not among the P) are
      appended to each batch: they serve only as negatives, as in the paper's batches.
    - Under DDP every rank builds the same identity permutation for the epoch and takes its own
      slice of each step, so the ranks' identities in a step are disjoint and the ranks together
      form one global P*world_size batch.
    - Deterministic for (seed, epoch): call ``set_epoch`` each epoch. Lightning does not call it on a
      batch sampler; under Lightning the :class:`~facenet_pl.data.datamodule.PKDataLoader` sets the
      epoch (and the position inside it, when resuming) from the trainer's progress.
    - An epoch visits each eligible identity about once: ``len(self)`` is
      ``eligible // (p * num_replicas)`` steps, unless ``batches_per_epoch`` sets it.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        p: int,
        k: int,
        extra_negatives: int = 0,
        few_images: str = "replace",
        batches_per_epoch: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if p < 1:
            raise ConfigError(f"data.p (identities per batch) must be >= 1, got {p}")
        if k < 2:
            raise ConfigError(f"data.k (images per identity) must be >= 2 to form anchor-positive pairs, got {k}")
        if extra_negatives < 0:
            raise ConfigError(f"data.extra_negatives must be >= 0, got {extra_negatives}")
        if few_images not in FEW_IMAGES_POLICIES:
            raise ConfigError(f"data.few_images must be one of {FEW_IMAGES_POLICIES}, got {few_images!r}")
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"rank {rank} outside [0, {num_replicas})")
        self.p, self.k, self.extra_negatives = int(p), int(k), int(extra_negatives)
        self.few_images, self.seed = few_images, int(seed)  # epoch and resume position: EpochBatchSampler
        self.num_replicas, self.rank = int(num_replicas), int(rank)

        order = np.argsort(labels, kind="stable")
        ids, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        self._order, self._starts, self._counts = order, starts, counts
        min_count = min_images_to_anchor(self.k, few_images)
        self._eligible = np.flatnonzero(counts >= min_count)  # positions into ids
        self.identities = ids
        per_step = self.p * self.num_replicas
        if len(self._eligible) < per_step:
            raise ConfigError(
                f"PKSampler needs p x world_size = {self.p} x {self.num_replicas} = {per_step} identities with "
                f">= {min_count} images per step, but the data has {len(self._eligible)} "
                f"(of {len(ids)} identities). Lower data.p, or use data.few_images=replace, or add data."
            )
        spare = len(ids) - per_step
        if self.extra_negatives * self.num_replicas > spare:
            raise ConfigError(
                f"data.extra_negatives={self.extra_negatives} (x world_size {self.num_replicas}) needs that many "
                f"identities beside the {per_step} in a step, but only {spare} are left: lower it"
            )
        default = len(self._eligible) // per_step
        self.batches_per_epoch = int(batches_per_epoch) if batches_per_epoch else default
        if self.batches_per_epoch < 1:
            raise ConfigError(f"data.batches_per_epoch must be >= 1, got {batches_per_epoch}")

    @property
    def batch_size(self) -> int:
        return self.p * self.k + self.extra_negatives

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _step_identities(self, rng: np.random.Generator) -> np.ndarray:
        """(steps, num_replicas, p) identity positions; each step's identities are distinct."""
        per_step = self.p * self.num_replicas
        steps_per_perm = len(self._eligible) // per_step
        n_perms = -(-self.batches_per_epoch // steps_per_perm)
        perms = [rng.permutation(self._eligible)[: steps_per_perm * per_step] for _ in range(n_perms)]
        seq = np.concatenate(perms)[: self.batches_per_epoch * per_step]
        return seq.reshape(self.batches_per_epoch, self.num_replicas, self.p)

    def _pick_images(self, rng: np.random.Generator, ids: np.ndarray, k: int) -> np.ndarray:
        """K dataset indices per identity in ``ids`` (any shape): without replacement when the identity has >= K
        images, with replacement otherwise. One random key per image of each chosen identity, sorted within the
        identity (key = its position in ``ids`` + a uniform draw): the first K are a uniform K-subset. Work grows
        with the chosen identities' own images, not with (identities) x (the largest identity's images)."""
        flat = ids.reshape(-1)
        cnt = self._counts[flat]
        seg_start = np.cumsum(cnt) - cnt
        seg = np.repeat(np.arange(flat.size), cnt)
        order = np.argsort(rng.random(seg.size) + seg)  # identities stay in place; their images shuffled
        offset = order - seg_start[seg]  # image position inside its identity, in shuffled order
        picks = offset[np.minimum(seg_start[:, None] + np.arange(k), seg.size - 1)]
        short = cnt < k  # too few images: draw with replacement
        if short.any():
            picks[short] = (rng.random((int(short.sum()), k)) * cnt[short, None]).astype(np.int64)
        idx = self._order[self._starts[flat][:, None] + picks]
        return idx.reshape(*ids.shape, k)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        steps = self._step_identities(rng)  # same on every rank
        images = self._pick_images(rng, steps, self.k)  # (steps, replicas, p, k)
        mine = images[:, self.rank].reshape(self.batches_per_epoch, -1)
        extra = None
        if self.extra_negatives:
            # Distinct identities outside the step's P*world_size, one image each: random keys
            # per (step, identity), the step's own identities pushed to the end, then the smallest.
            keys = rng.random((self.batches_per_epoch, len(self._counts)))
            np.put_along_axis(keys, steps.reshape(self.batches_per_epoch, -1), np.inf, axis=1)
            n_extra = self.num_replicas * self.extra_negatives
            draws = np.argpartition(keys, n_extra - 1, axis=1)[:, :n_extra]
            draws = draws.reshape(self.batches_per_epoch, self.num_replicas, self.extra_negatives)
            extra = self._pick_images(rng, draws, 1)[:, self.rank, :, 0]
        for b in range(self.take_skip(), self.batches_per_epoch):
            batch = mine[b] if extra is None else np.concatenate([mine[b], extra[b]])
            yield batch.tolist()
