"""All triplets that violate the margin (batch-all)."""

from __future__ import annotations

import torch

from facenet_pl.mining.base import Miner, PairBatch, Triplets


class BatchAllMiner(Miner):
    """Every valid (a, p, n) whose loss is non-zero: d(a,p) - d(a,n) + margin > 0.

    The number of triplets can reach B^3 / 2, so the (pair, negative) comparisons are done in
    chunks of pairs (``max_elements`` booleans at a time); each chunk is fully vectorised.
    """

    def __init__(self, margin: float, max_elements: int = 1 << 25) -> None:
        self.margin = margin
        self.max_elements = max_elements

    def select(self, embeddings: torch.Tensor, batch: PairBatch) -> Triplets:
        d, negative, a, p = batch.distances, batch.negative, batch.anchors, batch.positives
        b = d.shape[0]
        chunk = max(1, self.max_elements // b)
        out_a, out_p, out_n = [], [], []
        for s in range(0, a.shape[0], chunk):
            ca, cp = a[s : s + chunk], p[s : s + chunk]
            viol = (d[ca, cp][:, None] - d[ca] + self.margin > 0) & negative[ca]
            rows, n = torch.nonzero(viol, as_tuple=True)
            out_a.append(ca[rows])
            out_p.append(cp[rows])
            out_n.append(n)
        return torch.cat(out_a), torch.cat(out_p), torch.cat(out_n)
