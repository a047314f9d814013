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


def _far_curve(d: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds between distinct distances and the VAL/FAR of "same iff distance < t" at each.

    Thresholds: one below all distances, then the midpoints, then one above all distances.
    VAL = accepted same pairs / same pairs, FAR = accepted different pairs / different pairs.
    """
    u = np.unique(d)
    thr = np.r_[u[0] - 1e-6 * max(1.0, abs(u[0])), (u[1:] + u[:-1]) / 2, u[-1] + 1e-6 * max(1.0, abs(u[-1]))]
    n_same, n_diff = max(int(s.sum()), 1), max(int((~s).sum()), 1)
    val = np.searchsorted(np.sort(d[s]), thr, side="left") / n_same
    far = np.searchsorted(np.sort(d[~s]), thr, side="left") / n_diff
    return thr, val, far


def threshold_at_far(distances, issame, far_target: float) -> float:
    """The largest threshold whose FAR on these pairs is at most ``far_target``.

    FAR is a non-decreasing step function of the threshold, so this is the most permissive threshold that
    keeps the target on the pairs it is fit on. davidsandberg/facenet instead interpolates the threshold
    linearly between the FAR curve's points (``interp1d(far, thresholds)(far_target)``), which lands inside
    a step and can exceed the target on the very pairs it was fit on (e.g. FAR 3/2700 at a 1/1000 target).
    With too few different pairs to resolve the target, the threshold accepts no different pair (FAR 0).
    """
    d, s = _as_arrays(distances, issame)
    thr, _, far = _far_curve(d, s)
    ok = np.flatnonzero(far <= far_target)  # far[0] == 0: the threshold below every distance
    return float(thr[ok[-1]])


def ci95(values: list[float]) -> tuple[float, float]:
    """Student-t 95% interval of the mean of per-fold values (clipped to [0, 1]); NaN for one fold."""
    from scipy.stats import t as student_t

    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float("nan"), float("nan")
    half = float(student_t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return max(0.0, float(v.mean()) - half), min(1.0, float(v.mean()) + half)


def interval_note(low: float, high: float, folds: int, identities: int, what: str = "folds") -> str:
    """``"; wide: ..."`` when a 95% interval says little (it reaches 0 or 1, or comes from under 5 folds), naming
    how few people it rests on; else ``""``. An interval is never shown as 0-100% without this."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"; none: {folds} {what} of {identities} people are too few for an interval"
    if folds >= 5 and low > 0.0 and high < 1.0:
        return ""
    return f"; wide: only {identities} people in {folds} {what}, too few for a steady estimate"


def evaluate_pairs(
    distances, issame, n_folds: int = 10, far_target: float = 1e-3, folds=None, test_folds=None
) -> dict[str, float]:
    """The LFW verification table: k-fold accuracy, VAL@FAR, AUC, EER, best threshold.

    ``accuracy``/``accuracy_std`` (population std over folds)/``accuracy_ci95_low``/``_high`` (Student-t
    interval of the mean over folds): per fold, the threshold maximising accuracy on the other folds.
    ``val``/``val_std``/``far``: per fold, the threshold at ``far_target`` FAR on the other folds (the
    largest one with FAR <= target there), applied to the fold (mean VAL and achieved FAR over folds).
    ``auc`` and ``eer`` over the test folds' pairs; ``folds``: how many folds were tested.
    ``folds``/``test_folds``: see :func:`fold_splits`.
    """
    from sklearn.metrics import roc_auc_score, roc_curve  # sklearn: the reference ROC code

    d, s = _as_arrays(distances, issame)
    res = kfold_accuracy(d, s, n_folds, folds, test_folds)
    vals, fars = [], []
    for test in fold_splits(d.size, n_folds, folds, test_folds):
        train = np.ones(d.size, dtype=bool)
        train[test] = False
        t = threshold_at_far(d[train], s[train], far_target)
        st, dt = s[test], d[test]
        vals.append(float(np.mean(dt[st] < t)) if st.any() else float("nan"))
        fars.append(float(np.mean(dt[~st] < t)) if (~st).any() else float("nan"))
    res.update(val=float(np.nanmean(vals)), val_std=float(np.nanstd(vals)), far=float(np.nanmean(fars)))
    tested = np.concatenate(fold_splits(d.size, n_folds, folds, test_folds))
    d, s = d[tested], s[tested]
    if s.all() or (~s).all():
        res.update(auc=float("nan"), eer=float("nan"))
        return res
    res["auc"] = float(roc_auc_score(s, -d))
    fpr, tpr, _ = roc_curve(s, -d)
    fnr = 1 - tpr
    i = int(np.argmax(fpr >= fnr))  # first point where FAR crosses FRR: interpolate the crossing
    if i == 0:
        res["eer"] = float(fpr[0])
    else:
        x0, x1 = fpr[i - 1] - fnr[i - 1], fpr[i] - fnr[i]
        w = x0 / (x0 - x1) if x1 != x0 else 0.0
        res["eer"] = float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))
    return res


def fold_splits(n_pairs: int, n_folds: int = 10, folds=None, test_folds=None) -> list[np.ndarray]:
    """Test-index arrays, one per evaluated fold.

    ``folds``: a fold id per pair (default: ``n_folds`` consecutive chunks in file order, as LFW
    defines them). ``test_folds``: the folds to evaluate (default: all of them).
    """
    if folds is None:
        if n_folds < 2 or n_pairs < n_folds:
            raise ValueError(f"need n_folds >= 2 and at least n_folds pairs, got {n_folds} folds, {n_pairs} pairs")
        return [
            t
            for i, t in enumerate(np.array_split(np.arange(n_pairs), n_folds))
            if test_folds is None or i in set(test_folds)
        ]
    folds = np.asarray(folds).reshape(-1)
    if folds.size != n_pairs:
        raise ValueError(f"{folds.size} fold ids for {n_pairs} pairs")
    ids = np.unique(folds) if test_folds is None else np.asarray(list(test_folds))
    if len(np.unique(folds)) < 2:
        raise ValueError("need pairs from at least two folds: one to test, others to fit the threshold")
    return [np.flatnonzero(folds == i) for i in ids]


def kfold_accuracy(distances, issame, n_folds: int = 10, folds=None, test_folds=None) -> dict[str, float]:
    """Mean/std accuracy over the test folds, each with the threshold fit on all other pairs."""
    d, s = _as_arrays(distances, issame)
    accs, thrs = [], []
    for test in fold_splits(d.size, n_folds, folds, test_folds):  # one vectorised fit per fold
        train = np.ones(d.size, dtype=bool)
        train[test] = False
        thr, _ = best_threshold(d[train], s[train])
        accs.append(float(np.mean((d[test] < thr) == s[test])))
        thrs.append(thr)
    thr_all, acc_all = best_threshold(d, s)
    lo, hi = ci95(accs)
    return {
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "accuracy_ci95_low": lo,
        "accuracy_ci95_high": hi,
        "folds": len(accs),
        "threshold": float(np.mean(thrs)),
        "best_threshold": thr_all,
        "best_accuracy": acc_all,
    }
