"""Shared pieces of the online triplet miners: distances, label masks and the miner interface."""

from __future__ import annotations

from dataclasses import dataclass

import torch

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def pairwise_sq_distances(x: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between all rows of ``x`` (B, D) -> (B, B), clamped at 0.

    Uses ||a||^2 + ||b||^2 - 2 a.b (one matmul); the diagonal is set to exactly 0.
    """
    sq = (x * x).sum(dim=1)
    d = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    d = d.clamp_(min=0.0)
    d.fill_diagonal_(0.0)
    return d


def label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (B, B) masks: ``positive[a, p]`` same label and a != p; ``negative[a, n]`` other label."""
    same = labels[:, None] == labels[None, :]
    positive = same.clone()
    positive.fill_diagonal_(False)
    return positive, ~same


def empty_triplets(device: torch.device) -> Triplets:
    e = torch.empty(0, dtype=torch.long, device=device)
    return e, e.clone(), e.clone()


@dataclass
class PairBatch:
    """What every pair miner starts from: the label masks and every (anchor, positive) pair whose anchor has a
    negative (row-major order); ``distances`` (B, B) squared, None for a miner that needs none."""

    positive: torch.Tensor
    negative: torch.Tensor
    anchors: torch.Tensor
    positives: torch.Tensor
    distances: torch.Tensor | None


class Miner:
    """An online miner: ``miner(embeddings, labels) -> (anchor_idx, positive_idx, negative_idx)``.

    Indices are 1-D LongTensors on the embeddings' device. Mining never needs gradients: the
    distances are computed under ``torch.no_grad()`` and the loss recomputes the chosen ones.
    """

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        if embeddings.ndim != 2 or labels.ndim != 1 or embeddings.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{type(self).__name__} expects embeddings (B, D) and labels (B,), got "
                f"{tuple(embeddings.shape)} and {tuple(labels.shape)}"
            )
        labels = labels.to(embeddings.device)
        with torch.no_grad():
            x = embeddings.detach()
            if x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()  # distances in half precision lose the ordering the miner needs
            return self.mine(x, labels)

    #: Whether :meth:`select` reads ``PairBatch.distances`` (computed only then).
    needs_distances: bool = True

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        """Return the triplets for detached float embeddings. The shared start, once: label masks, the (a, p) pairs
        with a negative, no triplets when there are none, the distances; then :meth:`select` picks the negatives.
        A miner that is not per (a, p) pair (batch-hard: per anchor) overrides this instead."""
        positive, negative = label_masks(labels)
        a, p = pairs_with_negatives(positive, negative)
        if a.numel() == 0:
            return empty_triplets(embeddings.device)
        d = pairwise_sq_distances(embeddings) if self.needs_distances else None
        return self.select(embeddings, PairBatch(positive, negative, a, p, d))

    def select(self, embeddings: torch.Tensor, batch: PairBatch) -> Triplets:
        """(anchors, positives, negatives) for the batch's (a, p) pairs: what a pair miner implements."""
        raise NotImplementedError(f"{type(self).__name__}: implement select(embeddings, batch), or override mine()")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def pairs_with_negatives(positive: torch.Tensor, negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered (a, p) pairs whose anchor also has at least one negative, row-major order."""
    has_neg = negative.any(dim=1)
    a, p = torch.nonzero(positive & has_neg[:, None], as_tuple=True)
    return a, p
