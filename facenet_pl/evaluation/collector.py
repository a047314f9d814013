"""A torchmetrics ``Metric`` that gathers embeddings by dataset index across DDP ranks."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class EmbeddingCollector(Metric):
    """Accumulates (index, embedding) rows; ``compute()`` returns them sorted and de-duplicated.

    Under DDP the states are concatenated across ranks, and the duplicates a padded
    ``DistributedSampler`` adds are dropped, so every rank sees the full, ordered set.
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: torch.Tensor, indices: torch.Tensor) -> None:
        self.indices.append(indices.detach().long())
        self.embeddings.append(embeddings.detach().float())

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.indices if isinstance(self.indices, torch.Tensor) else torch.cat(self.indices)
        emb = self.embeddings if isinstance(self.embeddings, torch.Tensor) else torch.cat(self.embeddings)
        order = torch.argsort(idx, stable=True)
        idx, emb = idx[order], emb[order]
        keep = torch.ones_like(idx, dtype=torch.bool)
        keep[1:] = idx[1:] != idx[:-1]
        return idx[keep], emb[keep]
