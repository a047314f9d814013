"""FaceNet semi-hard negatives (TensorFlow ``triplet_semihard_loss`` semantics)."""

from __future__ import annotations

import torch

from facenet_pl.mining.base import Miner, PairBatch, Triplets


class SemiHardMiner(Miner):
    """Every (a, p) pair; negative = closest n with d(a,n) > d(a,p), else the farthest negative.

    This is FaceNet's semi-hard selection with TensorFlow ``triplet_semihard_loss`` semantics.
    Per anchor the negative distances are sorted once and every positive distance is located
    with ``searchsorted``: O(B^2 log B) time and O(B^2) memory, never a B x B x B tensor.
    """

    def select(self, embeddings: torch.Tensor, batch: PairBatch) -> Triplets:
        d, negative, a, p = batch.distances, batch.negative, batch.anchors, batch.positives
        neg_d = d.masked_fill(~negative, float("inf"))
        sorted_d, sorted_idx = neg_d.sort(dim=1)  # negatives first, ascending; +inf after them
        n_neg = negative.sum(dim=1)
        # Locate only the anchor-positive distances: pack each anchor's positives into a row of a
        # (B, max positives) matrix, then one batched searchsorted finds the first negative strictly
        # farther than each positive (B x (K-1) searches instead of B x B).
        counts = torch.bincount(a, minlength=d.shape[0])
        rank = torch.arange(a.numel(), device=a.device) - (torch.cumsum(counts, 0) - counts)[a]
        packed = torch.zeros(d.shape[0], int(counts.max()), dtype=d.dtype, device=d.device)
        packed[a, rank] = d[a, p]
        j = torch.searchsorted(sorted_d, packed, right=True)[a, rank]
        farthest = n_neg[a] - 1
        j = torch.where(j < n_neg[a], j, farthest)  # no semi-hard negative: the farthest one
        return a, p, sorted_idx[a, j]
