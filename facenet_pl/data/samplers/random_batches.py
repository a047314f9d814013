"""``RandomBatchSampler``: plain shuffled batches over all training images (``data.sampler=random``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from facenet_pl.data.samplers.base import EpochBatchSampler
from facenet_pl.utils.errors import ConfigError


class RandomBatchSampler(EpochBatchSampler):
    """Batches of ``batch_size`` images drawn uniformly from ``num_images``, without replacement within a pass.

    For classification losses, which need no identity structure in a batch. Like :class:`PKSampler`: deterministic
    for (seed, epoch), resumable mid-epoch (:class:`EpochBatchSampler`), and under DDP every rank draws the same
    permutation and takes its own slice of each step, so the ranks' batches are disjoint and together form one
    global ``batch_size * num_replicas`` batch. An epoch is ``num_images // (batch_size * num_replicas)`` steps (each
    image about once) unless ``batches_per_epoch`` sets it; more steps than one pass continue with a new permutation.
    """

    def __init__(
        self,
        num_images: int,
        batch_size: int,
        batches_per_epoch: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"random batches: batch size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"rank {rank} outside [0, {num_replicas})")
        per_step = batch_size * num_replicas
        if num_images < per_step:
            raise ConfigError(
                f"data.sampler=random: a step takes batch size x world size = {batch_size} x {num_replicas} = "
                f"{per_step} images, but the training data has {num_images}. Lower data.p or data.k."
            )
        self.num_images, self._batch_size = int(num_images), int(batch_size)
        self.num_replicas, self.rank, self.seed = int(num_replicas), int(rank), int(seed)
        self.batches_per_epoch = int(batches_per_epoch) if batches_per_epoch else self.num_images // per_step
        if self.batches_per_epoch < 1:
            raise ConfigError(f"data.batches_per_epoch must be >= 1, got {batches_per_epoch}")

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        per_step = self._batch_size * self.num_replicas
        steps_per_perm = self.num_images // per_step
        n_perms = -(-self.batches_per_epoch // steps_per_perm)
        seq = np.concatenate([rng.permutation(self.num_images)[: steps_per_perm * per_step] for _ in range(n_perms)])
        steps = seq[: self.batches_per_epoch * per_step].reshape(self.batches_per_epoch, self.num_replicas, -1)
        for b in range(self.take_skip(), self.batches_per_epoch):
            yield steps[b, self.rank].tolist()
