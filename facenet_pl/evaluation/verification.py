"""Face verification metrics: k-fold accuracy with the threshold chosen on held-out folds.

The LFW protocol: pairs are split into ``n_folds`` consecutive folds (file order); for each fold
the distance threshold that maximises accuracy on the other folds is applied to it. The reported
accuracy is the mean (and std) over folds. Everything is vectorised with numpy: finding the best
threshold is a sort plus cumulative sums, O(N log N), not a scan over a threshold grid.
"""

from __future__ import annotations

import numpy as np


def _as_arrays(distances, issame) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    s = np.asarray(issame).astype(bool).reshape(-1)
    if d.shape != s.shape:
        raise ValueError(f"distances ({d.shape[0]}) and issame ({s.shape[0]}) differ in length")
    if not np.all(np.isfinite(d)):
        raise ValueError("distances contain NaN or inf: the embeddings are broken (check the loss)")
    return d, s


def best_threshold(distances, issame) -> tuple[float, float]:
    """Threshold t maximising the accuracy of "same iff distance < t"; returns (t, accuracy).

    Candidates are the midpoints between consecutive distinct sorted distances, plus one below
    the minimum and one above the maximum; ties in accuracy go to the smallest threshold.
    """
    d, s = _as_arrays(distances, issame)
    if d.size == 0:
        raise ValueError("best_threshold needs at least one pair")
    order = np.argsort(d, kind="stable")
    ds, ss = d[order], s[order]
    # Distinct values: a threshold between ds[i] and ds[i+1] accepts exactly ds[:i+1].
    last_of_run = np.r_[ds[1:] != ds[:-1], True]
    same_cum = np.cumsum(ss)[last_of_run]  # same pairs accepted
    diff_cum = np.cumsum(~ss)[last_of_run]  # different pairs accepted (false accepts)
    n_diff = int((~ss).sum())
    correct = np.r_[n_diff, same_cum + (n_diff - diff_cum)]  # first entry: accept nothing
    k = int(np.argmax(correct))
    vals = ds[last_of_run]
    if k == 0:
        thr = vals[0] - 1e-6 * max(1.0, abs(vals[0]))
    elif k == len(vals):
        thr = vals[-1] + 1e-6 * max(1.0, abs(vals[-1]))
    else:
        thr = 0.5 * (vals[k - 1] + vals[k])
    return float(thr), float(correct[k] / d.size)


def kfold_accuracy(distances, issame, n_folds: int = 10) -> dict[str, float]:
    """Mean/std accuracy over ``n_folds`` consecutive folds, thresholds fit on the other folds."""
    d, s = _as_arrays(distances, issame)
    if n_folds < 2 or d.size < n_folds:
        raise ValueError(f"need n_folds >= 2 and at least n_folds pairs, got {n_folds} folds, {d.size} pairs")
    folds = np.array_split(np.arange(d.size), n_folds)
    accs, thrs = [], []
    for test in folds:  # n_folds iterations, each vectorised
        train = np.ones(d.size, dtype=bool)
        train[test] = False
        thr, _ = best_threshold(d[train], s[train])
        accs.append(float(np.mean((d[test] < thr) == s[test])))
        thrs.append(thr)
    thr_all, acc_all = best_threshold(d, s)
    return {
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "threshold": float(np.mean(thrs)),
        "best_threshold": thr_all,
        "best_accuracy": acc_all,
    }
