"""Batch-hard mining (Hermans et al. 2017)."""

from __future__ import annotations

import torch

from facenet_pl.mining.base import Miner, Triplets, empty_triplets, label_masks, pairwise_sq_distances


class BatchHardMiner(Miner):
    """One triplet per anchor with a positive and a negative: farthest positive, closest negative. (Per anchor, not
    per (a, p) pair: it overrides ``mine`` rather than the pair miners' ``select``.)

    Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person Re-Identification" (2017).
    """

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        d = pairwise_sq_distances(embeddings)
        positive, negative = label_masks(labels)
        anchors = torch.nonzero(positive.any(dim=1) & negative.any(dim=1), as_tuple=True)[0]
        if anchors.numel() == 0:
            return empty_triplets(embeddings.device)
        da = d[anchors]
        hardest_pos = da.masked_fill(~positive[anchors], float("-inf")).argmax(dim=1)
        hardest_neg = da.masked_fill(~negative[anchors], float("inf")).argmin(dim=1)
        return anchors, hardest_pos, hardest_neg
