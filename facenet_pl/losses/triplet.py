"""FaceNet triplet loss on squared Euclidean distances of L2-normalised embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from facenet_pl.mining.base import Triplets

REDUCTIONS = ("mean", "sum", "mean_active")


@dataclass
class TripletStats:
    """What a training step logs about its triplets (detached scalars)."""

    num_triplets: int
    active_fraction: torch.Tensor
    mean_d_ap: torch.Tensor
    mean_d_an: torch.Tensor


class TripletLoss(nn.Module):
    """``max(0, ||f(a)-f(p)||^2 - ||f(a)-f(n)||^2 + margin)`` over mined triplets.

    ``reduction``: ``mean`` over all mined triplets (default), ``sum`` (the paper's formula), or
    ``mean_active`` (mean over the triplets with a non-zero loss, common with batch-all mining).
    With no triplets the loss is a zero that is still connected to the embeddings' graph, so
    ``backward()`` works and DDP ranks stay in step.
    """

    def __init__(self, margin: float = 0.2, reduction: str = "mean") -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"loss.margin must be >= 0, got {margin}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"loss.reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.margin = float(margin)
        self.reduction = reduction

    def forward(self, embeddings: torch.Tensor, triplets: Triplets) -> tuple[torch.Tensor, TripletStats]:
        a, p, n = triplets
        if a.numel() == 0:
            zero = embeddings.sum() * 0.0
            nan = torch.tensor(float("nan"), device=embeddings.device)
            return zero, TripletStats(0, torch.zeros((), device=embeddings.device), nan, nan)
        half = embeddings.dtype in (torch.float16, torch.bfloat16)
        emb = embeddings.float() if half else embeddings  # distances of unit vectors need float32
        d_ap = (emb[a] - emb[p]).pow(2).sum(dim=1)
        d_an = (emb[a] - emb[n]).pow(2).sum(dim=1)
        losses = torch.relu(d_ap - d_an + self.margin)
        active = losses > 0
        if self.reduction == "sum":
            loss = losses.sum()
        elif self.reduction == "mean_active":
            loss = losses.sum() / active.sum().clamp(min=1)
        else:
            loss = losses.mean()
        stats = TripletStats(
            num_triplets=int(a.numel()),
            active_fraction=active.float().mean().detach(),
            mean_d_ap=d_ap.mean().detach(),
            mean_d_an=d_an.mean().detach(),
        )
        return loss, stats
