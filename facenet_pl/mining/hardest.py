"""Hardest negative for every anchor-positive pair."""

from __future__ import annotations

import torch

from facenet_pl.mining.base import Miner, PairBatch, Triplets


class HardestMiner(Miner):
    """Every (a, p) pair; negative = the closest negative of the anchor (argmin d(a, n))."""

    def select(self, embeddings: torch.Tensor, batch: PairBatch) -> Triplets:
        hardest = batch.distances.masked_fill(~batch.negative, float("inf")).argmin(dim=1)
        return batch.anchors, batch.positives, hardest[batch.anchors]
