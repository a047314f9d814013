"""PKSampler: batch layout, DDP disjointness, determinism and its error messages."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from facenet_pl.data import PKSampler


def _labels(seed=0, n_ids=60, lo=1, hi=15):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_ids), rng.integers(lo, hi, n_ids))
    return labels[rng.permutation(len(labels))]  # dataset order need not be grouped


def test_every_batch_is_p_distinct_identities_times_k():
    labels = _labels()
    s = PKSampler(labels, p=6, k=4, few_images="replace")
    batches = list(s)
    assert len(batches) == len(s) > 0
    seen = []
    for b in batches:
        ids = Counter(labels[b].tolist())
        assert len(b) == 24 and len(ids) == 6 and set(ids.values()) == {4}
        seen += list(ids)
    assert len(seen) == len(set(seen)), "an identity came twice within one epoch"


def test_images_without_replacement_when_enough():
    labels = _labels(lo=4)
    for b in PKSampler(labels, p=5, k=4, few_images="skip"):
        assert len(set(b)) == len(b)


def test_every_image_of_an_identity_is_equally_likely():
    """Over many epochs, each image of an identity with c >= k images is drawn with probability k/c whenever its
    identity is (the analytic rate of k draws without replacement), whatever the other identities' sizes."""
    counts = [5, 9, 40, 3, 17, 12, 6, 25]
    labels = np.repeat(np.arange(len(counts)), counts)
    s = PKSampler(labels, p=4, k=3, few_images="skip", seed=1)
    picked, chosen = np.zeros(len(labels)), np.zeros(len(counts))
    for epoch in range(600):
        s.set_epoch(epoch)
        for b in s:
            assert len(set(b)) == len(b)
            picked[b] += 1
            chosen[np.unique(labels[b])] += 1
    for ident, c in enumerate(counts):
        rate = picked[labels == ident] / chosen[ident]
        if c < 3:
            assert chosen[ident] == 0  # skipped: fewer than k images
            continue
        # binomial standard error of each image's rate over `chosen` draws, 5 sigma
        tol = 5 * np.sqrt((3 / c) * (1 - 3 / c) / chosen[ident])
        assert np.all(np.abs(rate - 3 / c) <= tol), (ident, rate, 3 / c)


def test_skip_policy_leaves_out_small_identities_and_replace_uses_them():
    labels = np.repeat(np.arange(20), [1, 2, 3] + [8] * 17)
    skip = PKSampler(labels, p=4, k=5, few_images="skip", batches_per_epoch=30)
    used = {int(labels[i]) for b in skip for i in b}
    assert used.isdisjoint({0, 1, 2})
    rep = PKSampler(labels, p=4, k=5, few_images="replace", batches_per_epoch=60)
    used = {int(labels[i]) for b in rep for i in b}
    assert {1, 2} <= used and 0 not in used  # one image cannot form a pair


def test_ddp_ranks_draw_disjoint_identities_and_cover_the_global_batch():
    labels = _labels(n_ids=80, lo=3)
    ranks = [PKSampler(labels, p=5, k=3, num_replicas=3, rank=r, seed=7) for r in range(3)]
    for r in ranks:
        r.set_epoch(2)
    assert len({len(r) for r in ranks}) == 1
    for step in zip(*ranks):
        ids = [set(labels[b].tolist()) for b in step]
        assert all(len(i) == 5 for i in ids)
        assert len(set.union(*ids)) == 15, "ranks share an identity within a step"


def test_deterministic_per_seed_and_epoch():
    labels = _labels()
    a, b = PKSampler(labels, 4, 3, seed=1), PKSampler(labels, 4, 3, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)
    assert list(PKSampler(labels, 4, 3, seed=2)) != list(a)


def test_extra_negatives_are_distinct_outside_identities():
    labels = _labels(n_ids=50, lo=2)
    s = PKSampler(labels, p=4, k=2, extra_negatives=6, num_replicas=2, rank=0, batches_per_epoch=25)
    partner = PKSampler(labels, p=4, k=2, extra_negatives=6, num_replicas=2, rank=1, batches_per_epoch=25)
    for b0, b1 in zip(s, partner):
        assert len(b0) == s.batch_size == 14
        core0, extra0 = labels[b0[:8]], labels[b0[8:]]
        core1 = labels[b1[:8]]
        assert len(set(extra0.tolist())) == 6
        assert set(extra0.tolist()).isdisjoint(set(core0.tolist()) | set(core1.tolist()))


def test_batches_per_epoch_longer_than_one_pass():
    labels = _labels(n_ids=12, lo=3)
    s = PKSampler(labels, p=4, k=2, batches_per_epoch=10)
    batches = list(s)
    assert len(batches) == 10
    for b in batches:
        assert len(set(labels[b].tolist())) == 4


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(p=100, k=2), "needs p x world_size"),
        (dict(p=2, k=1), "data.k"),
        (dict(p=0, k=2), "data.p"),
        (dict(p=2, k=2, few_images="oops"), "data.few_images"),
        (dict(p=2, k=2, extra_negatives=-1), "extra_negatives"),
        (dict(p=10, k=2, extra_negatives=55), "extra_negatives"),
    ],
)
def test_bad_settings_name_the_config_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PKSampler(_labels(n_ids=60), **kwargs)
