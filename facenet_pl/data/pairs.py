"""Verification pairs with their folds: LFW-style pairs drawn from held-out identities.

Like LFW View 2: ``n_folds`` folds with disjoint identities, each fold holding ``pairs_per_fold``
matched pairs followed by as many mismatched pairs. Every pair carries its fold id, and every
consumer (training validation, the test after training, ``eval.py``, the CLI) reads the folds from
there: nobody re-derives them by cutting the pair list into chunks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)


def identities_with_pairs(labels: np.ndarray) -> np.ndarray:
    """The identities with >= 2 images (sorted): the only ones a positive pair, a held-out person or a cluster can
    be made of."""
    ids, counts = np.unique(np.asarray(labels), return_counts=True)
    return ids[counts >= 2]


def make_pairs(
    labels, n_folds: int = 10, pairs_per_fold: int = 150, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(pairs, issame, folds)``: int64 (M, 2) row indices into ``labels``, bool (M,), int64 (M,).

    Identities are dealt to folds at random; matched pairs are two distinct images of one identity,
    mismatched pairs are images of two distinct identities of the same fold (drawn with replacement).
    """
    labels = np.asarray(labels)
    ids, counts = np.unique(labels, return_counts=True)
    if len(ids) < 2 * n_folds:
        raise ValueError(
            f"need at least {2 * n_folds} identities for {n_folds} folds of pairs, got {len(ids)}; "
            "add held-out identities (data.val_identities / data.test_identities) or lower data.val_folds"
        )
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    fold_of_id = np.array_split(rng.permutation(len(ids)), n_folds)
    all_pairs, all_same, all_folds = [], [], []
    for f, fold_ids in enumerate(fold_of_id):  # one vectorised draw per fold
        multi = fold_ids[counts[fold_ids] >= 2]
        if len(multi) == 0:
            raise ValueError("a verification fold has no identity with two images: raise images per identity")
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
        all_folds.append(np.full(2 * pairs_per_fold, f, np.int64))
    return np.concatenate(all_pairs).astype(np.int64), np.concatenate(all_same), np.concatenate(all_folds)


def fold_count(n_identities: int, requested: int, what: str) -> int:
    """Folds for ``n_identities`` held-out identities: ``requested``, or fewer (>= 2 identities per fold).

    Says so when it lowers the count; raises ValueError when not even 2 folds fit (4 identities).
    """
    n = min(int(requested), n_identities // 2)
    if n < 2:
        raise ValueError(
            f"{what}: {n_identities} identities with >= 2 images can not be split into 2 verification folds of >= 2 "
            "identities each (the threshold is fit on one fold and tested on another): 4 identities are the minimum"
        )
    if n < requested:
        log.warning(
            "%s: %d identities allow %d verification folds, not the %d asked for (data.val_folds)",
            what,
            n_identities,
            n,
            requested,
        )
    return n


def _index_in(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Position of each needle in ``haystack`` (all needles must be present)."""
    sorter = np.argsort(haystack)
    return sorter[np.searchsorted(haystack, needles, sorter=sorter)]


@dataclass
class VerificationSet:
    """Images of held-out identities and the labelled pairs drawn from them, each pair with its fold.

    ``dataset`` yields the images that ``pairs`` index (None when only distances are at hand); ``labels``
    (default: ``dataset.labels``) the identity of each. ``test_folds``: the folds whose accuracy is reported,
    each with the threshold fit on all other pairs (None: every fold in turn, k-fold; LFW ``fold=i``:
    ``[i]``). ``name`` says what the pairs are (recorded with every result and with a threshold calibrated on
    them); ``identities`` are the people's names, stored in checkpoints so ``eval.py`` can check it tests the
    same people. ``trained_on_other_folds``: the pairs outside ``test_folds`` are of people the model trained on
    (LFW ``fold=i``, no outside data), so a threshold fit on them is biased (the model pulls its training
    people's pairs together); :meth:`evaluate` then uses the validation threshold when it is given.
    """

    dataset: Dataset | None
    pairs: np.ndarray
    issame: np.ndarray
    folds: np.ndarray
    name: str
    identities: list[str] = field(default_factory=list)
    test_folds: list[int] | None = None
    labels: np.ndarray | None = None
    trained_on_other_folds: bool = False

    def __post_init__(self) -> None:
        self.pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        self.issame = np.asarray(self.issame, dtype=bool).reshape(-1)
        self.folds = np.asarray(self.folds, dtype=np.int64).reshape(-1)
        if self.labels is None:
            self.labels = np.asarray(self.dataset.labels)
        self.labels = np.asarray(self.labels)
        if not len(self.pairs) == len(self.issame) == len(self.folds):
            raise ValueError(
                f"{self.name}: {len(self.pairs)} pairs, {len(self.issame)} labels, {len(self.folds)} "
                "fold ids: one of each per pair"
            )

    @classmethod
    def draw(
        cls,
        dataset: Dataset | None,
        labels,
        identities: list[str],
        n_folds: int,
        pairs_per_fold: int,
        seed: int,
        name: str,
        key: str,
    ) -> VerificationSet:
        """LFW-style pairs of these people (:func:`make_pairs`), with as many folds as they allow
        (:func:`fold_count`); a too small set is a :class:`~facenet_pl.utils.errors.ConfigError` naming ``key``."""
        from facenet_pl.utils.errors import ConfigError

        labels = np.asarray(labels)
        try:
            n = fold_count(len(np.unique(labels)), n_folds, key)
            pairs, same, folds = make_pairs(labels, n, pairs_per_fold, seed)
        except ValueError as e:
            raise ConfigError(f"{name}: {e}") from None
        return cls(dataset, pairs, same, folds, name=name, identities=list(identities), labels=labels)

    def distances(self, embeddings: torch.Tensor) -> np.ndarray:
        """Squared Euclidean distance of every pair, from embeddings indexed like ``dataset``."""
        p = torch.as_tensor(self.pairs, device=embeddings.device)
        return (embeddings[p[:, 0]] - embeddings[p[:, 1]]).pow(2).sum(1).double().cpu().numpy()

    def tested(self) -> np.ndarray:
        """Mask of the pairs whose accuracy is reported."""
        return np.ones(len(self.pairs), bool) if self.test_folds is None else np.isin(self.folds, self.test_folds)

    def people(self) -> int:
        """How many identities the reported pairs hold."""
        return int(len(np.unique(self.labels[self.pairs[self.tested()].ravel()])))

    def describe(self) -> dict[str, Any]:
        """What a threshold calibrated on these pairs was calibrated on (stored in checkpoints)."""
        return {
            "on": self.name,
            "pairs": int(self.tested().sum()),
            "identities": self.people(),
            "folds": int(len(np.unique(self.folds))),
        }
