"""LFW-style verification pairs drawn from a labelled set of held-out images.

Like LFW View 2: ``n_folds`` folds with disjoint identities, each fold holding ``pairs_per_fold``
matched pairs followed by as many mismatched pairs, in fold order.
"""

from __future__ import annotations

import numpy as np


def make_pairs(
    labels, n_folds: int = 10, pairs_per_fold: int = 150, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(pairs, issame)``: int64 (M, 2) row indices into ``labels`` and bool (M,).

    Matched pairs are two distinct images of one identity; mismatched pairs are images of two
    distinct identities of the same fold. Pairs are unique within a fold when possible.
    """
    labels = np.asarray(labels)
    ids, counts = np.unique(labels, return_counts=True)
    if len(ids) < 2 * n_folds:
        raise ValueError(
            f"need at least {2 * n_folds} identities for {n_folds} folds of pairs, got {len(ids)}; "
            "add validation identities (data.val_identities) or lower data.val_folds"
        )
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    fold_of_id = np.array_split(rng.permutation(len(ids)), n_folds)
    all_pairs, all_same = [], []
    for fold_ids in fold_of_id:  # one vectorised draw per fold
        multi = fold_ids[counts[fold_ids] >= 2]
        if len(multi) == 0:
            raise ValueError("a validation fold has no identity with two images: raise images per identity")
        # Matched: identity, then two distinct images of it.
        who = rng.choice(multi, size=pairs_per_fold)
        i = rng.integers(0, counts[who])
        j = (i + rng.integers(1, counts[who])) % counts[who]
        matched = np.stack([order[starts[who] + i], order[starts[who] + j]], 1)
        # Mismatched: two distinct identities of this fold, one image each.
        a = rng.choice(fold_ids, size=pairs_per_fold)
        off = rng.integers(1, len(fold_ids), size=pairs_per_fold)  # never 0: b != a
        b = fold_ids[(_index_in(fold_ids, a) + off) % len(fold_ids)]
        ia = rng.integers(0, counts[a])
        ib = rng.integers(0, counts[b])
        mismatched = np.stack([order[starts[a] + ia], order[starts[b] + ib]], 1)
        all_pairs += [matched, mismatched]
        all_same += [np.ones(pairs_per_fold, bool), np.zeros(pairs_per_fold, bool)]
    return np.concatenate(all_pairs).astype(np.int64), np.concatenate(all_same)


def _index_in(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Position of each needle in ``haystack`` (all needles must be present)."""
    sorter = np.argsort(haystack)
    return sorter[np.searchsorted(haystack, needles, sorter=sorter)]
