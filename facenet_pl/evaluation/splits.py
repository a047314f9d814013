"""Scores of a verification split (:class:`~facenet_pl.data.pairs.VerificationSet`): the data layer says which
pairs and folds; this module measures them."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from facenet_pl.evaluation.verification import ci95, evaluate_pairs

log = logging.getLogger(__name__)


#: :func:`score_split` result key -> the name it is logged under (``val/<name>``, ``test/<name>``).
LOGGED_PAIR_METRICS = {
    "accuracy": "acc",
    "accuracy_std": "acc_std",
    "accuracy_ci95_low": "acc_ci95_low",
    "accuracy_ci95_high": "acc_ci95_high",
    "threshold": "threshold",
    "val": "val_at_far",
    "far": "far",
    "auc": "auc",
    "eer": "eer",
    "pairs": "pairs",
    "identities": "identities",
    "folds": "folds",
    "accuracy_other_folds_threshold": "acc_other_folds_threshold",  # (only where a validation threshold exists)
}
#: What a ``data.val_bins`` set logs (``val/<set>/<name>``): its own protocol's k-fold figures.
LOGGED_BIN_METRICS = {"accuracy": "acc", "accuracy_std": "acc_std", "auc": "auc", "eer": "eer"}


def logged_metrics(res: dict[str, Any], prefix: str, names: dict[str, str] = LOGGED_PAIR_METRICS) -> dict[str, float]:
    """``{"<prefix>/<name>": value}`` of a :func:`score_split` result, as training logs it."""
    return {f"{prefix}/{name}": float(res[key]) for key, name in names.items() if key in res}


def accuracy_at(split, distances: np.ndarray, threshold: float) -> float:
    """Accuracy of "same iff distance < threshold" on the split's reported pairs (one fixed threshold)."""
    t = split.tested()
    return float(np.mean((np.asarray(distances)[t] < threshold) == split.issame[t]))


def score_split(
    split, distances: np.ndarray, far_target: float | None = None, val_threshold: float | None = None
) -> dict[str, Any]:
    """The verification table (:func:`~facenet_pl.evaluation.evaluate_pairs`) of ``split`` with what it was measured on.

    ``accuracy`` has one meaning wherever a validation threshold exists: every tested pair is decided at
    ``val_threshold`` (calibrated on validation people, held out of training and of the test), so the tested
    people choose nothing; ``accuracy_std`` and the 95% interval are over the tested folds at that threshold. The
    k-fold figure (each fold at the threshold fit on the other folds' pairs, LFW's README procedure) is kept as
    ``accuracy_other_folds_threshold``. ``threshold_from`` says which threshold ``accuracy`` used. Without a finite
    ``val_threshold`` (no validation people, or pairs of other data) ``accuracy`` is the k-fold figure; when those
    other folds' people were trained on (``split.trained_on_other_folds``) it is biased, and a warning says so.
    """
    far = {} if far_target is None else {"far_target": far_target}  # None: evaluate_pairs's own default
    res: dict[str, Any] = evaluate_pairs(distances, split.issame, folds=split.folds, test_folds=split.test_folds, **far)
    res.update(pairs=int(split.tested().sum()), identities=split.people(), on=split.name)
    if val_threshold is not None and np.isfinite(val_threshold):
        d, thr = np.asarray(distances), float(val_threshold)
        accs = [
            float(np.mean((d[split.folds == f] < thr) == split.issame[split.folds == f]))
            for f in np.unique(split.folds[split.tested()])
        ]
        lo, hi = ci95(accs)
        res.update(
            accuracy_other_folds_threshold=res["accuracy"],
            accuracy=accuracy_at(split, d, thr),  # pooled over the tested pairs (folds may differ in size)
            accuracy_std=float(np.std(accs)),
            accuracy_ci95_low=lo,
            accuracy_ci95_high=hi,
            threshold=thr,
            threshold_from="validation people, held out of training",
        )
    elif split.trained_on_other_folds:
        res["threshold_from"] = "the other folds' pairs, people the model trained on (mean of the folds')"
        log.warning(
            "%s: the accuracy threshold is fit on the other folds' pairs, whose people the model trained on; it "
            "is biased once the model fits them closely (longer training lowers this accuracy while AUC rises). "
            "Hold out validation people (data.val_identities > 0) to calibrate it on people the model never saw.",
            split.name,
        )
    else:
        res["threshold_from"] = "the other folds' pairs, k-fold (mean of the folds')"
    return res


def calibrate_threshold(
    embeddings: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    name: str,
    folds: int,
    pairs_per_fold: int,
    seed: int,
    far_target: float | None = None,
):
    """A verification threshold from a labelled set: pairs drawn among its people with >= 2 images (``folds`` x
    ``pairs_per_fold``, by ``seed``), the threshold at ``far_target`` (None: best accuracy). Returns (threshold,
    the pairs' verification table, the pairs)."""
    import torch

    from facenet_pl.data.pairs import VerificationSet, identities_with_pairs
    from facenet_pl.evaluation.verification import best_threshold, threshold_at_far

    multi = identities_with_pairs(labels)
    rows = np.flatnonzero(np.isin(labels, multi))
    split = VerificationSet.draw(
        None,
        labels[rows],
        [names[i] for i in multi],
        folds,
        pairs_per_fold,
        seed,
        name=name,
        key="people with >= 2 readable images",
    )
    d = split.distances(torch.from_numpy(np.asarray(embeddings)[rows]))
    res = score_split(split, d)
    thr = (
        threshold_at_far(d, split.issame, far_target) if far_target is not None else best_threshold(d, split.issame)[0]
    )
    return float(thr), res, split
