"""k-fold verification accuracy against a brute-force numpy threshold scan."""

from __future__ import annotations

import numpy as np
import pytest

from facenet_pl.evaluation import best_threshold, kfold_accuracy


def _brute_best(d, s):
    """Try every threshold between/around the distances; the best accuracy of d < t."""
    u = np.unique(d)
    cands = np.r_[u[0] - 1, (u[1:] + u[:-1]) / 2, u[-1] + 1]
    accs = [np.mean((d < t) == s) for t in cands]
    return cands[int(np.argmax(accs))], max(accs)


def _brute_kfold(d, s, k=10):
    accs = []
    for test in np.array_split(np.arange(len(d)), k):
        train = np.setdiff1d(np.arange(len(d)), test)
        t, _ = _brute_best(d[train], s[train])
        accs.append(np.mean((d[test] < t) == s[test]))
    return np.mean(accs), np.std(accs)


@pytest.mark.parametrize("seed", range(5))
def test_kfold_matches_brute_force_non_separable(seed):
    rng = np.random.default_rng(seed)
    s = rng.random(400) < 0.5
    d = np.where(s, rng.normal(0.8, 0.3, 400), rng.normal(1.4, 0.3, 400))
    d = np.round(d, 2)  # repeated distances: ties between candidate thresholds
    mean, std = _brute_kfold(d, s)
    res = kfold_accuracy(d, s)
    assert res["accuracy"] == pytest.approx(mean) and res["accuracy_std"] == pytest.approx(std)
    assert 0.6 < res["accuracy"] < 0.99
    assert best_threshold(d, s)[1] == pytest.approx(_brute_best(d, s)[1])


def test_separable_case_is_perfect_and_threshold_separates():
    d = np.r_[np.linspace(0.1, 0.5, 50), np.linspace(1.0, 2.0, 50)]
    s = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    perm = np.random.default_rng(0).permutation(100)
    res = kfold_accuracy(d[perm], s[perm])
    assert res["accuracy"] == 1.0 and res["accuracy_std"] == 0.0
    assert 0.5 < res["best_threshold"] < 1.0


def test_all_same_distance_is_chance_not_a_crash():
    d, s = np.ones(100), np.arange(100) % 2 == 0  # every fold half same, half different
    assert kfold_accuracy(d, s)["accuracy"] == pytest.approx(0.5, abs=0.1)


def test_errors():
    with pytest.raises(ValueError, match="differ in length"):
        kfold_accuracy(np.ones(10), np.ones(9, bool))
    with pytest.raises(ValueError, match="NaN"):
        kfold_accuracy(np.r_[np.nan, np.ones(19)], np.ones(20, bool))


def test_roc_plot_draws_only_false_accept_rates_the_pairs_can_measure(tmp_path, monkeypatch):
    """1,500 different pairs measure FAR in steps of 1/1500: nothing may be drawn left of it (the old plot put its
    first point at 1e-4 with 62% accepted); the limit is marked; the drawn points are sklearn's ROC points."""
    import matplotlib.figure
    from sklearn.metrics import roc_curve

    from facenet_pl.evaluation.plots import save_roc

    saved = []
    real = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda f, *a, **k: (saved.append(f), real(f, *a, **k))[1])
    rng = np.random.default_rng(0)
    s = np.r_[np.ones(1500, bool), np.zeros(1500, bool)]
    d = np.where(s, rng.normal(0.6, 0.2, 3000), rng.normal(1.4, 0.2, 3000))  # well separated: TAR 0.6+ at FAR 0
    save_roc(d, s, tmp_path / "roc.png")
    ax = saved[0].axes[0]
    curve, limit = ax.get_lines()
    x, y = np.asarray(curve.get_xdata()), np.asarray(curve.get_ydata())
    assert x.min() == pytest.approx(1 / 1500) and ax.get_xlim()[0] < 1 / 1500
    fpr, tpr, _ = roc_curve(s, -d)
    assert tpr[fpr == 0].max() > 0.6  # the case of the report: many accepted at FAR 0
    assert y[x == x.min()].min() >= tpr[fpr == 0].max()  # at 1/1500 at least as many accepted as at FAR 0
    assert list(limit.get_xdata()) == [1 / 1500, 1 / 1500] and "1/1500" in limit.get_label()
    save_roc(d[s], s[s], tmp_path / "same_only.png")  # no different pairs: a message, not a crash
    assert (tmp_path / "same_only.png").stat().st_size > 0
