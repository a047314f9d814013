"""Offline triplet mining (FaceNet section 3.2, first option).

Every ``every_n_steps`` training batches, a subset of the training data (``subset_identities`` x
``images_per_identity`` images, drawn like a PK batch) is embedded with the *current* model, without
gradients and in eval mode, and the configured miner picks triplets on it. The following batches
are made of those triplets: each batch holds ``triplets_per_batch`` triplets laid out as
``[anchors..., positives..., negatives...]`` (see :func:`facenet_pl.mining.offline.offline_batch_triplets`),
and the loss is computed on fresh embeddings of exactly those images.

The paper prefers online mining (what ``miner=...`` does by default); this option exists to
reproduce its comparison. Mining runs in the process that iterates the sampler (the trainer's main
process), so its cost is on the training clock, as in the paper.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np

from facenet_pl.data.samplers.base import EpochBatchSampler
from facenet_pl.data.samplers.pk import PKSampler
from facenet_pl.utils.errors import ConfigError

log = logging.getLogger(__name__)

#: ``mine(dataset_indices) -> (a, p, n)``: positions into ``dataset_indices``.
MineFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


class OfflineTripletSampler(EpochBatchSampler):
    """Batch sampler whose batches are triplets mined offline on a periodically refreshed subset.

    - ``subsets`` draws the mining subset: a :class:`PKSampler` (with the subset's P and K); its
      epoch ``r`` is the ``r``-th refresh, so subsets are deterministic per seed and, under DDP,
      disjoint across ranks.
    - ``mine`` embeds those dataset indices with the current model and mines them.
    - The pool of mined triplets is shuffled and consumed ``triplets_per_batch`` at a time,
      cycling if ``every_n_steps`` batches need more triplets than the pool holds.
    - A subset in which the miner finds nothing (``BatchAllMiner`` when every triplet already meets
      the margin) is replaced by the next one; after ``max_empty`` empty subsets in a row it stops
      with an error rather than train on nothing.
    - ``resume(epoch, done)`` puts it at batch ``done`` of ``epoch`` (the loader calls it at the start
      of every epoch). Continuing where it is keeps the pool; any other position (a resumed run) mines
      a fresh pool at once with the restored weights and keeps the refresh schedule: the next refresh
      comes where the uninterrupted run's would. The subsets drawn are deterministic per refresh, but
      the resumed pool is mined with the checkpoint's weights, so its triplets differ from the ones the
      uninterrupted run drew from a pool mined earlier.
    """

    def __init__(
        self,
        subsets: PKSampler,
        mine: MineFn,
        every_n_steps: int,
        triplets_per_batch: int,
        batches_per_epoch: int,
        seed: int = 0,
        max_empty: int = 10,
    ) -> None:
        if every_n_steps < 1:
            raise ConfigError(f"miner.offline.every_n_steps must be >= 1 to mine offline, got {every_n_steps}")
        if triplets_per_batch < 1:
            raise ConfigError(f"miner.offline.triplets_per_batch must be >= 1, got {triplets_per_batch}")
        if batches_per_epoch < 1:
            raise ConfigError(f"batches per epoch must be >= 1, got {batches_per_epoch}")
        self.subsets, self.mine = subsets, mine
        self.every_n_steps, self.triplets_per_batch = int(every_n_steps), int(triplets_per_batch)
        self.batches_per_epoch, self.seed, self.max_empty = int(batches_per_epoch), int(seed), int(max_empty)
        self._pool: np.ndarray | None = None  # (M, 3) dataset indices
        self._cursor = 0
        self._since_refresh = 0
        self._refreshes = 0  # number of subsets mined so far (drives the subset seed)
        self._resume_offset = 0  # after a resume, batches already trained since the last scheduled refresh
        self._produced = 0  # batches yielded since training began (epoch * batches_per_epoch + position)

    @property
    def batch_size(self) -> int:
        return 3 * self.triplets_per_batch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def resume(self, epoch: int, completed_batches: int) -> None:
        """Continue ``epoch`` after ``completed_batches``; a jump re-mines the pool with the current model."""
        super().resume(epoch, completed_batches)
        target = self.epoch * self.batches_per_epoch + self._skip
        if target == self._produced and (self._pool is not None or target == 0):
            return  # simply the next epoch of this run
        self._pool, self._produced = None, target
        self._refreshes = target // self.every_n_steps + 1
        self._resume_offset = target % self.every_n_steps

    def state_dict(self) -> dict:
        return {**super().state_dict(), "refreshes": self._refreshes}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._refreshes = int(state.get("refreshes", self._refreshes))
        self._pool = None

    def _refresh(self) -> None:
        for _ in range(self.max_empty):
            self.subsets.set_epoch(self._refreshes)
            idx = np.asarray(next(iter(self.subsets)), dtype=np.int64)
            self._refreshes += 1
            a, p, n = (np.asarray(t, dtype=np.int64) for t in self.mine(idx))
            if a.size:
                pool = np.stack([idx[a], idx[p], idx[n]], axis=1)
                rng = np.random.default_rng([self.seed, self._refreshes])
                self._pool, self._cursor = pool[rng.permutation(len(pool))], 0
                self._since_refresh, self._resume_offset = self._resume_offset, 0
                log.debug("offline mining: %d triplets from %d images", len(pool), idx.size)
                return
            log.info("offline mining: no triplet in a subset of %d images; drawing another", idx.size)
        raise ConfigError(
            f"offline mining found no triplet in {self.max_empty} subsets in a row: the model already meets the "
            "margin on them (miner=batch_all keeps only violating triplets). Use miner=semihard or hardest, a larger "
            "loss.margin, or raise miner.offline.subset_identities."
        )

    def _next_batch(self) -> list[int]:
        if self._pool is None or self._since_refresh >= self.every_n_steps:
            self._refresh()
        take = (self._cursor + np.arange(self.triplets_per_batch)) % len(self._pool)
        self._cursor = int(take[-1]) + 1
        self._since_refresh += 1
        self._produced += 1
        return self._pool[take].T.reshape(-1).tolist()  # [anchors, positives, negatives]

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.take_skip(), self.batches_per_epoch):
            yield self._next_batch()
