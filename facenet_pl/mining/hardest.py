"""Hardest negative for every anchor-positive pair."""

from __future__ import annotations

import torch

from facenet_pl.mining.base import (
    Miner,
    Triplets,
    empty_triplets,
    label_masks,
    pairs_with_negatives,
    pairwise_sq_distances,
)


class HardestMiner(Miner):
    """Every (a, p) pair; negative = the closest negative of the anchor (argmin d(a, n))."""

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        d = pairwise_sq_distances(embeddings)
        positive, negative = label_masks(labels)
        a, p = pairs_with_negatives(positive, negative)
        if a.numel() == 0:
            return empty_triplets(embeddings.device)
        hardest = d.masked_fill(~negative, float("inf")).argmin(dim=1)
        return a, p, hardest[a]
