"""Independent references for tests: triplets enumerated in plain Python (no vectorised code shared with the
package), for the miners and the offline miner to be checked against."""

from __future__ import annotations

import itertools

import numpy as np

MARGIN = 0.2


def _dist(emb: np.ndarray) -> list[list[float]]:
    """Squared Euclidean distances by explicit differences (not the matmul identity)."""
    n = len(emb)
    return [[float(((emb[i] - emb[j]) ** 2).sum()) for j in range(n)] for i in range(n)]


def _pairs(labels):
    n = len(labels)
    for a, p in itertools.permutations(range(n), 2):
        if labels[a] == labels[p] and any(labels[x] != labels[a] for x in range(n)):
            yield a, p


def brute_semihard(emb, labels):
    d, out = _dist(emb), []
    for a, p in _pairs(labels):
        negs = [n for n in range(len(labels)) if labels[n] != labels[a]]
        semi = [n for n in negs if d[a][n] > d[a][p]]
        n = min(semi, key=lambda n: d[a][n]) if semi else max(negs, key=lambda n: d[a][n])
        out.append((a, p, n))
    return sorted(out)


def brute_hardest(emb, labels):
    d = _dist(emb)
    return sorted(
        (a, p, min((n for n in range(len(labels)) if labels[n] != labels[a]), key=lambda n: d[a][n]))
        for a, p in _pairs(labels)
    )


def brute_batch_all(emb, labels, margin=MARGIN):
    d, out = _dist(emb), []
    for a, p in _pairs(labels):
        for n in range(len(labels)):
            if labels[n] != labels[a] and d[a][p] - d[a][n] + margin > 0:
                out.append((a, p, n))
    return sorted(out)


def walk_identity_folders(root, min_images=1, include=None, exclude=None):
    """What an identity-folder scan must return, by a plain sorted ``os.walk`` (no symlinked folders, no hidden
    entries, no file whose suffix is one of the listed non-image kinds): (paths, labels, names)."""
    import fnmatch
    import os
    from pathlib import Path

    from facenet_pl.data.file_index import NON_IMAGE_SUFFIXES  # the published list; the rule is applied here

    root = Path(root)
    inc = [] if include is None else [include] if isinstance(include, str) else list(include)
    exc = [] if exclude is None else [exclude] if isinstance(exclude, str) else list(exclude)
    names, paths, labels = [], [], []
    for ident in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = []
        for dirpath, dirnames, filenames in os.walk(ident, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [
                Path(dirpath) / f
                for f in sorted(filenames)
                if not f.startswith(".") and os.path.splitext(f)[1].lower() not in NON_IMAGE_SUFFIXES
            ]
        rel = [f.relative_to(root).as_posix() for f in files]
        files = [
            f
            for f, r in zip(files, rel)
            if (not inc or any(fnmatch.fnmatchcase(r, g) for g in inc))
            and not any(fnmatch.fnmatchcase(r, g) for g in exc)
        ]
        if len(files) >= min_images:
            labels += [len(names)] * len(files)
            names.append(ident.name)
            paths += files
    return paths, np.asarray(labels, dtype=np.int64), names
