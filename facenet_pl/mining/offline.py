"""Offline triplet mining (FaceNet section 3.2, first option): the batch layout.

Batches mined offline (see :class:`facenet_pl.data.samplers.OfflineTripletSampler`, which draws them) hold whole
triplets laid out ``[anchors..., positives..., negatives...]``; :func:`offline_batch_triplets` gives the miner-free
triplet indices of such a batch, so the loss is computed on fresh embeddings of exactly those images.
"""

from __future__ import annotations

import torch

from facenet_pl.utils.errors import ConfigError


def offline_batch_triplets(batch_size: int, device: torch.device | None = None):
    """Triplet indices of an offline batch of ``3 T`` images laid out ``[a_1..a_T, p_1..p_T, n_1..n_T]``."""
    if batch_size % 3:
        raise ValueError(f"an offline-mined batch holds whole triplets (3 T images), got {batch_size} images")
    t = batch_size // 3
    a = torch.arange(t, device=device)
    return a, a + t, a + 2 * t


def offline_settings(miner: dict) -> dict | None:
    """``miner.offline`` when triplets are mined offline (``every_n_steps`` > 0), else None. Offline triplets are
    mined per rank on a subset, so ``miner.cross_rank`` is refused beside them."""
    offline = dict(miner.get("offline") or {})
    if not offline.get("every_n_steps"):
        return None
    if miner.get("cross_rank"):
        raise ConfigError(
            "miner.offline.every_n_steps and miner.cross_rank=true do not combine: offline "
            "triplets are mined per rank on a subset. Set one of them off."
        )
    return offline
