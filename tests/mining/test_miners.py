"""Every miner against a brute-force reference that enumerates triplets in plain Python."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from facenet_pl.mining import (
    BatchAllMiner,
    BatchHardMiner,
    HardestMiner,
    RandomMiner,
    SemiHardMiner,
    pairwise_sq_distances,
)

from ..references import MARGIN, _dist, _pairs, brute_batch_all, brute_hardest, brute_semihard


def brute_batch_hard(emb, labels):
    d, out = _dist(emb), []
    for a in range(len(labels)):
        pos = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            out.append((a, max(pos, key=lambda p: d[a][p]), min(neg, key=lambda n: d[a][n])))
    return sorted(out)


def _as_sorted(triplets):
    a, p, n = (t.tolist() for t in triplets)
    return sorted(zip(a, p, n))


def _case(seed: int, n_ids: int, max_per_id: int, dim: int = 8, normalise: bool = True):
    """Random embeddings (float64, so no near-ties) and labels including singleton identities."""
    rng = random.Random(seed)
    labels = []
    for i in range(n_ids):
        labels += [i] * rng.randint(1, max_per_id)
    rng.shuffle(labels)
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    if normalise:
        emb = torch.nn.functional.normalize(emb, dim=1)
    return emb, torch.tensor(labels)


def _fallback_case():
    """2-D unit vectors where some positives are farther than every negative (fallback branch)."""
    ang = torch.deg2rad(torch.tensor([0.0, 180.0, 10.0, 95.0, 200.0, 300.0, 40.0], dtype=torch.float64))
    return torch.stack([ang.cos(), ang.sin()], 1), torch.tensor([0, 0, 1, 1, 2, 2, 3])


CASES = [(s, n_ids, per) for s, (n_ids, per) in enumerate([(2, 3), (4, 4), (7, 5), (10, 2), (12, 6), (5, 9)])] + [
    (-1, 0, 0)  # the constructed fallback case
]


@pytest.mark.parametrize("seed,n_ids,per", CASES)
@pytest.mark.parametrize(
    "miner,brute",
    [
        (SemiHardMiner(), brute_semihard),
        (HardestMiner(), brute_hardest),
        (BatchAllMiner(margin=MARGIN), brute_batch_all),
        (BatchHardMiner(), brute_batch_hard),
    ],
    ids=["semihard", "hardest", "batch_all", "batch_hard"],
)
def test_miner_matches_brute_force(miner, brute, seed, n_ids, per):
    emb, labels = _case(seed, n_ids, per) if seed >= 0 else _fallback_case()
    got = _as_sorted(miner(emb, labels))
    want = brute(emb.numpy(), labels.tolist())
    assert got == want


def test_semihard_uses_fallback_and_semihard_branches():
    """The cases must exercise both branches, or the comparison above proves little."""
    kinds = set()
    for emb, labels in [_case(3, 12, 6), _fallback_case()]:
        d = _dist(emb.numpy())
        for a, p, n in brute_semihard(emb.numpy(), labels.tolist()):
            kinds.add("semi" if d[a][n] > d[a][p] else "fallback")
    assert kinds == {"semi", "fallback"}


def test_batch_all_chunking_gives_the_same_triplets():
    emb, labels = _case(11, 9, 6)
    full = _as_sorted(BatchAllMiner(margin=0.5)(emb, labels))
    chunked = _as_sorted(BatchAllMiner(margin=0.5, max_elements=7)(emb, labels))
    assert full == chunked and len(full) > 0


@pytest.mark.parametrize(
    "miner", [SemiHardMiner(), HardestMiner(), RandomMiner(0), BatchAllMiner(margin=0.2), BatchHardMiner()]
)
@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3], [5]], ids=["one-identity", "all-singletons", "single"])
def test_no_valid_triplet_gives_empty_long_tensors(miner, labels):
    emb = torch.randn(len(labels), 4)
    a, p, n = miner(emb, torch.tensor(labels))
    for t in (a, p, n):
        assert t.dtype == torch.long and t.ndim == 1 and t.numel() == 0


def test_random_miner_valid_pairs_seeded_and_uniform():
    emb, labels = _case(5, 6, 4)
    miner = RandomMiner(seed=123)
    a, p, n = miner(emb, labels)
    lab = labels.tolist()
    assert sorted(zip(a.tolist(), p.tolist())) == sorted(_pairs(lab))
    assert all(lab[x] != lab[y] for x, y in zip(a.tolist(), n.tolist()))
    again = RandomMiner(seed=123)(emb, labels)
    assert torch.equal(again[2], n)
    assert not torch.equal(RandomMiner(seed=124)(emb, labels)[2], n)
    # Uniformity: one anchor-positive pair, 6 negatives, many draws -> each drawn ~1/6 of the time.
    lab2 = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])
    m = RandomMiner(seed=0)
    counts = np.zeros(8)
    for _ in range(3000):
        _, _, n2 = m(torch.randn(8, 3), lab2)
        np.add.at(counts, n2.numpy(), 1)
    freq = counts[2:] / counts[2:].sum()
    assert counts[:2].sum() == 0
    assert np.all(np.abs(freq - 1 / 6) < 0.03), freq


def test_indices_on_embedding_device_and_labels_moved():
    emb, labels = _case(1, 4, 4)
    for t in SemiHardMiner()(emb.float(), labels):
        assert t.device == emb.device


def test_half_precision_embeddings_are_mined_in_float32():
    emb, labels = _case(2, 6, 5, normalise=True)
    want = _as_sorted(SemiHardMiner()(emb.bfloat16().float(), labels))
    assert _as_sorted(SemiHardMiner()(emb.bfloat16(), labels)) == want


def test_bad_shapes_are_reported():
    with pytest.raises(ValueError, match="expects embeddings"):
        SemiHardMiner()(torch.randn(4, 3), torch.tensor([0, 1, 0]))


def test_pairwise_sq_distances_matches_numpy():
    x = torch.randn(17, 5, dtype=torch.float64)
    want = ((x.numpy()[:, None, :] - x.numpy()[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(pairwise_sq_distances(x).numpy(), want, atol=1e-12)
