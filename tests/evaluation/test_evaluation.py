"""Verification (VAL@FAR, AUC, EER), k-NN and clustering against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facenet_pl.evaluation import (
    clustering_scores,
    evaluate_pairs,
    knn_topk_accuracy,
    purity,
    split_gallery_probe,
    threshold_at_far,
)


def test_val_at_far_on_an_analytic_case():
    # Per fold: different-pair distances 1..100, same-pair distances 0.5, 1.5, ..., 99.5.
    # FAR 0.05 on the training folds holds for thresholds in (5, 6]; the largest candidate with it is
    # 5.75 (midpoint of 5.5 and 6), so the test fold accepts same pairs 0.5..5.5: VAL = 6/100.
    diff = np.arange(1, 101, dtype=float)
    same = np.arange(100) + 0.5
    d = np.tile(np.r_[same, diff], 10)
    s = np.tile(np.r_[np.ones(100, bool), np.zeros(100, bool)], 10)
    res = evaluate_pairs(d, s, far_target=0.05)
    assert res["far"] == pytest.approx(0.05)
    assert res["val"] == pytest.approx(0.06)
    assert res["val_std"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_threshold_at_far_gives_that_far_when_measured_directly(seed):
    """Independent of how the threshold is found: count the different pairs accepted at it."""
    rng = np.random.default_rng(seed)
    s = rng.random(300) < 0.5
    d = np.round(np.where(s, rng.normal(0.7, 0.3, 300), rng.normal(1.4, 0.3, 300)), 2)  # duplicates
    diff = np.sort(d[~s])
    step = 1 / len(diff)
    prev = -np.inf
    for target in (0.01, 0.05, 0.1, 0.3, 0.5):
        t = threshold_at_far(d, s, target)
        far = np.mean(diff < t)  # "same" iff distance < threshold
        assert abs(far - target) <= step + 1e-12 + np.max(np.unique(diff, return_counts=True)[1]) * step, target
        assert t >= prev  # a looser FAR never gives a stricter threshold
        prev = t


def test_threshold_at_far_on_a_known_distribution():
    # different-pair distances uniform on [1, 2]: FAR(t) = t - 1, so FAR 0.1 is t = 1.1 (large sample)
    rng = np.random.default_rng(0)
    d = np.r_[rng.uniform(0, 1, 20000), rng.uniform(1, 2, 20000)]
    s = np.r_[np.ones(20000, bool), np.zeros(20000, bool)]
    for target in (0.01, 0.1, 0.5):
        assert threshold_at_far(d, s, target) == pytest.approx(1 + target, abs=0.01)


def test_val_when_far_never_reaches_the_target_is_robust():
    # Different pairs all far: even the largest useful threshold has FAR 0 < target. No crash, no NaN.
    rng = np.random.default_rng(0)
    d = np.r_[rng.uniform(0, 1, 500), rng.uniform(2, 3, 500)]
    s = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    perm = rng.permutation(1000)
    res = evaluate_pairs(d[perm], s[perm], far_target=1e-6)
    assert res["val"] == 1.0 and res["far"] == 0.0
    assert res["accuracy"] == 1.0 and res["auc"] == 1.0 and res["eer"] == 0.0


def test_duplicated_distances_do_not_break_far_interpolation():
    d = np.repeat([0.5, 1.0, 1.5, 2.0], 50)
    s = np.repeat([True, True, False, False], 50)
    res = evaluate_pairs(d, s, n_folds=5, far_target=0.01)
    assert np.isfinite(res["val"]) and np.isfinite(res["far"])


def test_auc_and_eer_against_independent_definitions():
    rng = np.random.default_rng(3)
    s = rng.random(400) < 0.4
    d = np.where(s, rng.normal(1.0, 0.4, 400), rng.normal(1.6, 0.4, 400))
    res = evaluate_pairs(d, s)
    # AUC = P(d_same < d_diff) (Mann-Whitney), by brute force over all same x different pairs.
    ds, dd = d[s], d[~s]
    auc = np.mean(ds[:, None] < dd[None, :]) + 0.5 * np.mean(ds[:, None] == dd[None, :])
    assert res["auc"] == pytest.approx(auc, abs=1e-9)
    # EER: where FAR(t) = FRR(t); scan thresholds finely and take the closest crossing.
    ts = np.linspace(d.min(), d.max(), 20001)
    far = (dd[None, :] < ts[:, None]).mean(1)
    frr = 1 - (ds[None, :] < ts[:, None]).mean(1)
    i = np.argmin(np.abs(far - frr))
    assert res["eer"] == pytest.approx((far[i] + frr[i]) / 2, abs=0.01)


def test_test_folds_use_thresholds_from_the_other_folds_only():
    # Fold 0 alone would choose a threshold of ~0.5; the other folds put it at ~1.5, so fold 0 scores 50%.
    d0 = np.r_[np.full(50, 0.2), np.full(50, 0.8)]
    rest = np.r_[np.full(50, 1.0), np.full(50, 2.0)]
    d = np.r_[d0, np.tile(rest, 9)]
    s = np.tile(np.r_[np.ones(50, bool), np.zeros(50, bool)], 10)
    folds = np.repeat(np.arange(10), 100)
    assert evaluate_pairs(d, s, folds=folds, test_folds=[0])["accuracy"] == pytest.approx(0.5)
    assert evaluate_pairs(d, s, folds=folds, test_folds=[1])["accuracy"] == pytest.approx(1.0)


def test_knn_matches_sklearn_top1_and_a_brute_topk():
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(15, 8))
    labels = np.repeat(np.arange(15), 6)
    emb = torch.nn.functional.normalize(torch.tensor(centres[labels] + rng.normal(0, 0.9, (90, 8))), dim=1).float()
    g, p = split_gallery_probe(labels, 1, seed=0)
    assert len(g) == 15 and len(p) == 75 and set(labels[g]) == set(range(15))
    res = knn_topk_accuracy(emb[g], torch.tensor(labels[g]), emb[p], torch.tensor(labels[p]), ks=(1, 5))
    clf = KNeighborsClassifier(n_neighbors=1).fit(emb[g].numpy(), labels[g])
    assert res["top1"] == pytest.approx(np.mean(clf.predict(emb[p].numpy()) == labels[p]))
    d = ((emb[p].numpy()[:, None] - emb[g].numpy()[None]) ** 2).sum(-1)
    top5 = np.argsort(d, axis=1)[:, :5]
    assert res["top5"] == pytest.approx(np.mean([labels[pi] in labels[g][row] for pi, row in zip(p, top5)]))
    assert res["top5"] > res["top1"] > 0.2


def test_clustering_scores_match_sklearn_and_a_brute_purity():
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(6), 10)
    emb = rng.normal(size=(6, 5))[labels] * 3 + rng.normal(0, 1.0, (60, 5))
    res = clustering_scores(emb, labels, seed=0)
    pred = KMeans(n_clusters=6, n_init=4, random_state=0).fit_predict(emb)
    assert res["kmeans/nmi"] == pytest.approx(normalized_mutual_info_score(labels, pred))
    brute = sum(max(np.sum((pred == c) & (labels == t)) for t in range(6)) for c in np.unique(pred)) / 60
    assert res["kmeans/purity"] == pytest.approx(brute)
    assert purity([0, 0, 1, 1], [5, 5, 5, 5]) == 0.5 and purity([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    for m in ("kmeans", "agglomerative"):
        assert 0.5 < res[f"{m}/nmi"] <= 1.0 and -0.1 < res[f"{m}/ami"] <= 1.0


def test_distance_plots_say_which_threshold_they_draw(tmp_path, monkeypatch):
    """training's distances.png draws the stored (validation-calibrated) threshold, and so does eval.py on the run's
    own test split; on the validation pairs (which chose that threshold) eval.py draws the k-fold thresholds' mean:
    each legend says which."""
    import matplotlib.axes

    from ..helpers import eval_in_process, train_in_process

    labels, axvline = [], matplotlib.axes.Axes.axvline

    def record(self, *args, **kwargs):
        labels.append(kwargs.get("label", ""))
        return axvline(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "axvline", record)
    train_in_process(tmp_path / "run", "trainer.max_epochs=1")
    assert labels and labels[-1].startswith("stored threshold (validation people)")
    eval_in_process(tmp_path / "run" / "checkpoints" / "last.ckpt", tmp_path / "eval")
    assert labels[-1].startswith("threshold (validation people, held out of training)")
    eval_in_process(tmp_path / "run" / "checkpoints" / "last.ckpt", tmp_path / "eval_val", "split=val")
    assert labels[-1].startswith("threshold (the other folds' pairs, k-fold (mean of the folds'))")
