"""A uniformly random negative for every anchor-positive pair."""

from __future__ import annotations

import torch

from facenet_pl.mining.base import Miner, PairBatch, Triplets


class RandomMiner(Miner):
    """Every (a, p) pair; a negative drawn uniformly among the anchor's negatives.

    ``seed`` makes the draws reproducible (a generator on the embeddings' device).
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._generator: torch.Generator | None = None

    def _gen(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    needs_distances = False

    def select(self, embeddings: torch.Tensor, batch: PairBatch) -> Triplets:
        negative, a, p = batch.negative, batch.anchors, batch.positives
        n_neg = negative.sum(dim=1)
        # Row a of neg_order lists the anchor's negatives first (stable: in index order).
        neg_order = torch.argsort((~negative).to(torch.int8), dim=1, stable=True)
        u = torch.rand(a.shape[0], device=embeddings.device, generator=self._gen(embeddings.device))
        r = (u * n_neg[a]).long().clamp_(max=n_neg[a] - 1)
        return a, p, neg_order[a, r]
