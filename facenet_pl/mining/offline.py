"""Offline triplet mining (FaceNet section 3.2, first option): the batch layout.

Batches mined offline (see :class:`facenet_pl.data.samplers.OfflineTripletSampler`, which draws them) hold whole
triplets laid out ``[anchors..., positives..., negatives...]``; :func:`offline_batch_triplets` gives the miner-free
triplet indices of such a batch, so the loss is computed on fresh embeddings of exactly those images.
"""

from __future__ import annotations

import torch


def offline_batch_triplets(batch_size: int, device: torch.device | None = None):
    """Triplet indices of an offline batch of ``3 T`` images laid out ``[a_1..a_T, p_1..p_T, n_1..n_T]``."""
    if batch_size % 3:
        raise ValueError(f"an offline-mined batch holds whole triplets (3 T images), got {batch_size} images")
    t = batch_size // 3
    a = torch.arange(t, device=device)
    return a, a + t, a + 2 * t
