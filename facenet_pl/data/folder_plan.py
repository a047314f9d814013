"""Settings of a folder data set derived from the folder itself, decided (and checked) before any decoding.

A 38-person folder with the defaults of a 10,000-person one used to fail after decoding (100 held-out people
asked for), or to train one step per epoch. :func:`plan_folder` looks at the scanned file list only (labels and
identity names, no pixels) and turns every ``auto`` setting into a number that fits the data, checks the explicit
ones, and says what it chose in one message with the keys to override.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet_pl.data.pairs import identities_with_pairs
from facenet_pl.data.samplers.pk import min_images_to_anchor
from facenet_pl.utils.errors import ConfigError

AUTO = "auto"
#: Held-out identities of an ``auto`` split: 15% of the identities, at least 4 (2 folds of 2), at most 100.
AUTO_HELD_OUT_FRACTION, AUTO_HELD_OUT_MAX = 0.15, 100
MIN_HELD_OUT = 4  # 2 verification folds of >= 2 identities: the threshold is fit on one fold, tested on another
AUTO_P_MAX = 32
#: ``batches_per_epoch=auto`` never goes below this: a 40-person folder still trains ~240 steps in 12 epochs.
AUTO_MIN_BATCHES = 20


@dataclass
class FolderPlan:
    """What a folder data set will train and evaluate on, as label ids of the scan."""

    val_ids: np.ndarray
    test_ids: np.ndarray
    train_ids: np.ndarray
    p: int
    batches_per_epoch: int | None
    message: str


def _is_auto(value) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def _names(value, key: str) -> list[str] | None:
    """A list of names, or the lines of a names file (``#`` comments, blank lines skipped); None for a count."""
    if isinstance(value, str) and not _is_auto(value):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{key}={value!r}: not a number, a fraction, 'auto', a list of names or an existing "
                "file of names (one identity folder name per line)"
            )
        return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [str(v) for v in value]
    if hasattr(value, "__iter__") and not isinstance(value, str):  # an OmegaConf ListConfig
        return [str(v) for v in value]
    return None


def _count(value, n: int, key: str) -> int:
    """A number of identities: an int >= 0, or a fraction of ``n`` in (0, 1)."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}={value}: give a number of identities, a fraction in (0, 1), 'auto' or names")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{key}={value!r}: give a number of identities (an integer >= 0), a fraction in (0, 1), "
            "'auto', a list of identity names or a file of names"
        ) from None
    if 0 < number < 1:
        return max(int(round(number * n)), 1)
    if number < 0 or number != int(number):
        raise ConfigError(f"{key}={value}: give a number of identities (an integer >= 0) or a fraction in (0, 1)")
    return int(number)


def auto_held_out(n: int) -> tuple[int, int]:
    """(val, test) identities for ``n`` identities with >= 2 images: 15% each (4..100); no validation below 12
    identities (the last epoch is kept), a test set of 4 down to 6 identities."""
    held = min(AUTO_HELD_OUT_MAX, max(MIN_HELD_OUT, int(round(AUTO_HELD_OUT_FRACTION * n))))
    if n - 2 * held >= 4:
        return held, held
    if n >= MIN_HELD_OUT + 2:
        return 0, MIN_HELD_OUT
    raise ConfigError(
        f"the folder has {n} identities with >= 2 images: training needs at least "
        f"{MIN_HELD_OUT + 2} ({MIN_HELD_OUT} held out for the test, 2 to train on). Add people, or "
        "evaluate a trained model on the whole folder: python eval.py ckpt_path=... data=folder "
        "data.root=... split=all"
    )


def plan_folder(
    labels: np.ndarray,
    names: list[str],
    root: str,
    *,
    val_identities,
    test_identities,
    p,
    k: int,
    extra_negatives: int = 0,
    few_images: str = "replace",
    batches_per_epoch=None,
    val_folds: int = 10,
    world_size: int = 1,
    seed: int = 0,
) -> FolderPlan:
    """Split the scanned identities into train / val / test and size the PK batches, before decoding.

    ``val_identities`` / ``test_identities``: ``auto`` (:func:`auto_held_out`), a count, a fraction, a list of
    identity (folder) names or a file of names. ``p`` / ``batches_per_epoch``: ``auto`` (p = min(32, training
    identities / world size); enough batches that an epoch shows each training image about once, at least
    :data:`AUTO_MIN_BATCHES`), or a number checked against the data. Counts come from the file list;
    unreadable files found later can only lower them.
    """
    labels = np.asarray(labels)
    ids, counts = np.unique(labels, return_counts=True)
    multi = identities_with_pairs(labels)
    index = {name: i for i, name in enumerate(names)}
    derived: list[str] = []

    named: dict[str, np.ndarray] = {}
    for key, value in (("data.val_identities", val_identities), ("data.test_identities", test_identities)):
        wanted = _names(value, key)
        if wanted is None:
            continue
        unknown = [w for w in wanted if w not in index]
        if unknown:
            raise ConfigError(
                f"{key}: {len(unknown)} name(s) are not identity folders of data.root={root} "
                f"(e.g. {', '.join(unknown[:3])}); names are the sub-folder names"
            )
        named[key] = np.unique([index[w] for w in wanted])
    if len(named) == 2 and np.intersect1d(*named.values()).size:
        both = [names[i] for i in np.intersect1d(*named.values())][:3]
        raise ConfigError(
            f"data.val_identities and data.test_identities both name {', '.join(both)}: the splits "
            "must not share people"
        )

    taken = np.concatenate(list(named.values())) if named else np.array([], np.int64)
    pool = np.random.default_rng(seed).permutation(np.setdiff1d(multi, taken))
    chosen: dict[str, np.ndarray] = {}
    for which, (key, value) in enumerate(
        (("data.val_identities", val_identities), ("data.test_identities", test_identities))
    ):
        if key in named:
            chosen[key] = named[key]
            continue
        if _is_auto(value):
            try:
                n = auto_held_out(len(multi))[which]
            except ConfigError as e:
                raise ConfigError(f"{key}=auto: {e}") from None
            derived.append(f"{key}={n}")
        else:
            n = _count(value, len(multi), key)
        chosen[key], pool = pool[:n], pool[n:]
    val_ids, test_ids = np.sort(chosen["data.val_identities"]), np.sort(chosen["data.test_identities"])
    for key, held in (("data.val_identities", val_ids), ("data.test_identities", test_ids)):
        if 0 < len(held) < MIN_HELD_OUT:
            raise ConfigError(
                f"{key}: {len(held)} identities are too few for verification pairs: give at least "
                f"{MIN_HELD_OUT} (2 folds of 2), or 0 for none"
            )
    train_ids = np.setdiff1d(ids, np.concatenate([val_ids, test_ids]))
    min_count = min_images_to_anchor(k, few_images)
    eligible = int((counts[np.isin(ids, train_ids)] >= min_count).sum())
    if eligible < 2 * world_size:
        raise ConfigError(
            f"data.root={root} has {len(multi)} identities with >= 2 images; holding out data.val_identities="
            f"{len(val_ids)} and data.test_identities={len(test_ids)} leaves {eligible} to train on (at least "
            f"{2 * world_size} needed). Lower them (a fraction such as 0.15 works too, 'auto' sizes them), or "
            "evaluate a trained model on the whole folder: python eval.py ckpt_path=... data=folder data.root=... "
            "split=all"
        )

    if _is_auto(p):
        p = max(1, min(AUTO_P_MAX, eligible // world_size))
        derived.append(f"data.p={p}")
    else:
        p = int(p)
        if p * world_size > eligible:
            raise ConfigError(
                f"data.p={p} identities per batch{f' x {world_size} ranks' if world_size > 1 else ''}, but only "
                f"{eligible} training identities have >= {min_count} images (after holding out {len(val_ids)} val "
                f"and {len(test_ids)} test identities): lower data.p (data.p=auto picks "
                f"{max(1, min(AUTO_P_MAX, eligible // world_size))})"
            )
    spare = len(train_ids) - p * world_size
    if extra_negatives * world_size > spare:
        raise ConfigError(
            f"data.extra_negatives={extra_negatives} needs that many training identities beside the "
            f"{p * world_size} of a step, but only {spare} are left: lower it"
        )
    train_images = int(np.isin(labels, train_ids).sum())
    if _is_auto(batches_per_epoch):
        batches_per_epoch = max(AUTO_MIN_BATCHES, eligible // (p * world_size), train_images // (p * k * world_size))
        derived.append(f"data.batches_per_epoch={batches_per_epoch}")
    elif batches_per_epoch is not None:
        batches_per_epoch = int(batches_per_epoch)
    folds = [
        f"{what} {min(int(val_folds), len(h) // 2)}" for what, h in (("val", val_ids), ("test", test_ids)) if len(h)
    ]
    message = (
        f"data.root={root}: {len(ids)} identities ({len(multi)} with >= 2 images), {len(labels)} files. "
        f"Train on {len(train_ids)} identities ({train_images} files), hold out {len(val_ids)} for validation "
        f"and {len(test_ids)} for the test"
        + (f" (verification folds: {', '.join(folds)})" if folds else "")
        + ". "
        + (
            f"Derived from the data: {', '.join(derived)}; override any of them on the command line (e.g. "
            f"{derived[0].split('=')[0]}=...)."
            if derived
            else "All settings as given."
        )
    )
    return FolderPlan(val_ids, test_ids, train_ids, int(p), batches_per_epoch, message)


def cv_test_folds(labels: np.ndarray, names: list[str], n_folds: int, seed: int, root: str) -> list[list[str]]:
    """``cv=N`` on a folder: the identities with >= 2 images split into ``n_folds`` disjoint groups (drawn by
    ``seed``), each the test people of one run; every such person is tested exactly once."""
    multi = np.random.default_rng(seed).permutation(identities_with_pairs(labels))
    if n_folds < 2:
        raise ConfigError(f"cv={n_folds}: give at least 2 folds")
    if len(multi) // n_folds < MIN_HELD_OUT:
        raise ConfigError(
            f"cv={n_folds}: data.root={root} has {len(multi)} identities with >= 2 images, {len(multi) // n_folds} "
            f"per fold; each fold's test needs at least {MIN_HELD_OUT}. Lower cv (at most {len(multi) // MIN_HELD_OUT})"
        )
    return [sorted(names[i] for i in part) for part in np.array_split(multi, n_folds)]
