"""Recognition by k-nearest neighbours in embedding space, on a gallery/probe split by identity."""

from __future__ import annotations

import numpy as np
import torch


def split_gallery_probe(labels, gallery_per_identity: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a gallery (``gallery_per_identity`` random images of each identity that has more
    than that many) and the probes (all their other images). Identities with too few images are
    left out of both, so every probe's identity is in the gallery."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(labels)), labels))  # grouped by label, random within
    lab = labels[order]
    ids, starts, counts = np.unique(lab, return_index=True, return_counts=True)
    rank = np.arange(len(lab)) - np.repeat(starts, counts)  # position within its identity
    usable = np.repeat(counts > gallery_per_identity, counts)
    gallery = order[usable & (rank < gallery_per_identity)]
    probe = order[usable & (rank >= gallery_per_identity)]
    return np.sort(gallery), np.sort(probe)


def knn_topk_accuracy(
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    probes: torch.Tensor,
    probe_labels: torch.Tensor,
    ks: tuple[int, ...] = (1, 5),
    chunk: int = 4096,
) -> dict[str, float]:
    """Top-k identification accuracy: is the probe's identity among its k nearest gallery images'?

    Distances are squared Euclidean; probes are processed in chunks, each one matmul + topk.
    """
    gallery, probes = gallery.float(), probes.float()
    gallery_labels = torch.as_tensor(gallery_labels, device=gallery.device)
    probe_labels = torch.as_tensor(probe_labels, device=gallery.device)
    kmax = min(max(ks), len(gallery))
    hits = {k: 0 for k in ks}
    g2 = (gallery * gallery).sum(1)
    for s in range(0, len(probes), chunk):
        p = probes[s : s + chunk]
        d = (p * p).sum(1, keepdim=True) + g2[None] - 2 * p @ gallery.T
        nn_idx = d.topk(kmax, dim=1, largest=False).indices
        match = gallery_labels[nn_idx] == probe_labels[s : s + chunk, None]
        for k in ks:
            hits[k] += int(match[:, : min(k, kmax)].any(dim=1).sum())
    n = max(len(probes), 1)
    return {f"top{k}": hits[k] / n for k in ks}
