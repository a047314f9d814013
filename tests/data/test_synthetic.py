"""The built-in synthetic faces: deterministic, disjoint splits, and not trivially separable."""

from __future__ import annotations

import numpy as np
import torch

from facenet_pl.data.pairs import make_pairs
from facenet_pl.data.synthetic import SyntheticFaceConfig, generate_split, identity_params
from facenet_pl.evaluation import kfold_accuracy

CFG = SyntheticFaceConfig(image_size=64)


def test_deterministic_and_identity_stable():
    x1, y1 = generate_split(6, 3, seed=5, split="train", cfg=CFG)
    x2, y2 = generate_split(6, 3, seed=5, split="train", cfg=CFG)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.dtype == torch.uint8 and x1.shape == (18, 3, 64, 64)
    # Identity i's parameters do not depend on how many identities are drawn.
    assert torch.equal(identity_params(3, 5, "train"), identity_params(10, 5, "train")[:3])
    x3, _ = generate_split(6, 3, seed=6, split="train", cfg=CFG)
    assert not torch.equal(x1, x3)


def test_train_and_val_identities_differ():
    tr, va = identity_params(50, 0, "train"), identity_params(50, 0, "val")
    assert torch.cdist(tr, va).min() > 1e-3


def test_images_of_one_identity_vary():
    x, _ = generate_split(1, 4, seed=0, split="train", cfg=CFG)
    flat = x.float().reshape(4, -1)
    assert (flat[1:] - flat[0]).abs().mean() > 10  # pose, light, background differ


def test_raw_pixel_cosine_similarity_scores_at_most_75_percent():
    """The seed's requirement: the data must not be solvable by comparing pixels."""
    x, y = generate_split(200, 10, seed=0, split="val", cfg=CFG)
    pairs, same, _ = make_pairs(y.numpy(), n_folds=10, pairs_per_fold=150, seed=0)
    f = torch.nn.functional.normalize(x.reshape(len(x), -1).float(), dim=1)
    dist = 1 - (f[pairs[:, 0]] * f[pairs[:, 1]]).sum(1)
    acc = kfold_accuracy(dist.numpy(), same)["accuracy"]
    print(f"raw-pixel cosine verification accuracy: {acc:.4f}")
    assert acc <= 0.75


def test_make_pairs_layout():
    labels = np.repeat(np.arange(40), 3)
    pairs, same, fold_ids = make_pairs(labels, n_folds=10, pairs_per_fold=20, seed=1)
    assert pairs.shape == (400, 2) and same.sum() == 200
    la, lb = labels[pairs[:, 0]], labels[pairs[:, 1]]
    assert np.all((la == lb) == same) and np.all(pairs[:, 0] != pairs[:, 1])
    folds = np.split(np.arange(400), 10)
    assert fold_ids.tolist() == np.repeat(np.arange(10), 40).tolist()  # each pair's fold id travels with it
    ids_per_fold = [set(la[f]) | set(lb[f]) for f in folds]
    for i in range(10):
        assert same[folds[i]][:20].all() and not same[folds[i]][20:].any()
        for j in range(i):
            assert ids_per_fold[i].isdisjoint(ids_per_fold[j]), "folds share identities"
