"""The file index of an identity-folder tree: scanned once, written beside the decode cache, reused.

A tree of CASIA-WebFace / VGGFace2 size holds 0.5-3.3 M files; listing it again on every start costs
seconds on a local disk and minutes on a network filesystem. :func:`load_index` keeps one index per data root
in ``cache_dir``: ``index-<key>.csv`` (one row per file: path relative to the root, identity folder, size,
mtime) and ``index-<key>.json``, written last, with the modification time of every folder of the tree.

A later run reuses the index when no folder changed (adding, removing or renaming a file changes its folder's
mtime) and, with ``check="files"`` (the default), no indexed file changed size or mtime either (a file rewritten
in place); otherwise it rescans. ``check="dirs"`` skips the per-file check: one stat per folder instead of one
per file, for network filesystems, at the price of missing a file rewritten in place under the same name.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facenet_pl.utils.errors import ConfigError
from facenet_pl.utils.fileio import atomic_write

log = logging.getLogger(__name__)

INDEX_VERSION = 1
CHECKS = ("files", "dirs")


#: Suffixes of files that are never images (notes, metadata, archives, video, code): skipped before any decoding,
#: and counted apart from unreadable images. A name without a suffix, or with any other, is still tried.
NON_IMAGE_SUFFIXES = frozenset(
    ".txt .json .csv .tsv .md .rst .xml .yaml .yml .ini .cfg .log .db .mat .pdf .html .htm .py .sh .zip .tar .gz "
    ".tgz .bz2 .7z .rar .npy .npz .pkl .pt .pth .ckpt .safetensors .doc .docx .xls .xlsx .mp4 .avi .mov .mkv .wav "
    ".mp3".split()
)


def is_non_image(name: str) -> bool:
    """Whether the file name's suffix says it is not an image (:data:`NON_IMAGE_SUFFIXES`)."""
    dot = name.rfind(".")
    return dot > name.rfind("/") and name[dot:].lower() in NON_IMAGE_SUFFIXES


def count_suffixes(names) -> str:
    """``".txt x3, .json x1"``: what kinds of files were skipped."""
    from collections import Counter

    counts = Counter(n[n.rfind(".") :].lower() for n in names)
    return ", ".join(f"{k} x{v}" for k, v in counts.most_common(5))


@dataclass
class FileIndex:
    """Every non-hidden file under ``root/<identity>/`` (any depth), sorted by identity then path."""

    root: Path
    rel: list[str]  # posix paths relative to root
    identity: list[str]  # the identity folder of each file
    sizes: np.ndarray  # int64 bytes
    mtimes: np.ndarray  # int64 ns
    dirs: dict[str, int] = field(default_factory=dict)  # folder (relative, "" = root) -> mtime ns
    source: str = "scanned"  # "scanned" or "reused"

    def __len__(self) -> int:
        return len(self.rel)

    def fingerprint(self) -> str:
        """Hash of every file's path, size and mtime: equal fingerprints, same files."""
        rows = "\n".join(f"{r}:{s}:{m}" for r, s, m in zip(self.rel, self.sizes.tolist(), self.mtimes.tolist()))
        return hashlib.sha1(f"{self.root}\n{rows}".encode()).hexdigest()[:16]


def _scan_identity(root: Path, ident: str) -> tuple[list[tuple[str, int, int]], dict[str, int], list[str]]:
    """Files (relative path, size, mtime) and folders (relative path -> mtime) under one identity folder, in the
    order of a sorted top-down walk (a folder's files, then its sub-folders); symlinked folders not followed;
    and the special files left out (FIFOs, devices, sockets: a FIFO would block whoever opens it)."""
    files: list[tuple[str, int, int]] = []
    dirs: dict[str, int] = {}
    special: list[str] = []

    def walk(rel_dir: str) -> None:
        try:
            dirs[rel_dir] = os.stat(root / rel_dir).st_mtime_ns
            with os.scandir(root / rel_dir) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as e:
            log.warning("data.root=%s: cannot list %s (%s): skipped", root, rel_dir, e.strerror)
            return
        subdirs = []
        for e in entries:
            rel = f"{rel_dir}/{e.name}"
            try:
                if e.is_dir(follow_symlinks=False):
                    subdirs.append(rel)
                    continue
                if e.is_symlink() and e.is_dir():  # a symlinked folder: not followed (no loops)
                    continue
                st = e.stat()  # follows a file symlink
                if not stat.S_ISREG(st.st_mode):  # a FIFO would block the decoder forever; devices, sockets
                    special.append(rel)
                    continue
                files.append((rel, st.st_size, st.st_mtime_ns))
            except OSError:  # a broken symlink or a loop: kept, and found unreadable when decoded
                files.append((rel, -1, -1))
        for d in subdirs:
            walk(d)

    walk(ident)
    return files, dirs, special


def scan_tree(root: str | Path, threads: int = 8) -> FileIndex:
    """List every file under ``root/<identity>/`` with its size and mtime (``threads`` folders at a time: on a
    network filesystem each stat waits on the server, and waiting threads run in parallel)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={str(root)!r} is not a directory (expected one sub-folder per identity)")
    idents = sorted(e.name for e in os.scandir(root) if not e.name.startswith(".") and e.is_dir())
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(lambda i: _scan_identity(root, i), idents))
    rel: list[str] = []
    identity: list[str] = []
    sizes: list[int] = []
    mtimes: list[int] = []
    dirs = {"": os.stat(root).st_mtime_ns}
    special = [r for _, _, sp in results for r in sp]
    if special:
        log.warning(
            "data.root=%s: skipped %d special file(s) (FIFOs, devices, sockets; e.g. %s)",
            root,
            len(special),
            ", ".join(special[:3]),
        )
    for ident, (files, d, _) in zip(idents, results):
        dirs.update(d)
        for r, s, m in files:
            rel.append(r)
            identity.append(ident)
            sizes.append(s)
            mtimes.append(m)
    return FileIndex(root, rel, identity, np.asarray(sizes, np.int64), np.asarray(mtimes, np.int64), dirs)


def _index_files(cache_dir: Path, root: Path) -> tuple[Path, Path]:
    key = hashlib.sha1(f"v{INDEX_VERSION}:{root.resolve()}".encode()).hexdigest()[:12]
    return cache_dir / f"index-{key}.csv", cache_dir / f"index-{key}.json"


def write_index(index: FileIndex, cache_dir: str | Path) -> Path:
    """Write the index (CSV rows, then the JSON meta file last: an index without it is never used)."""
    rows_path, meta_path = _index_files(Path(cache_dir).expanduser(), index.root)

    def rows(f) -> None:
        import io

        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        w = csv.writer(text)
        w.writerow(["path", "identity", "size", "mtime_ns"])
        w.writerows(zip(index.rel, index.identity, index.sizes.tolist(), index.mtimes.tolist()))
        text.flush()
        text.detach()

    atomic_write(rows_path, rows)
    meta = {
        "version": INDEX_VERSION,
        "root": str(index.root),
        "files": len(index),
        "fingerprint": index.fingerprint(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "dirs": index.dirs,
    }
    atomic_write(meta_path, lambda f: f.write(json.dumps(meta).encode()))
    return rows_path


def _read_index(root: Path, cache_dir: Path) -> tuple[FileIndex, dict] | str | None:
    """The stored index of ``root``: (index, meta); None when there is none (or one of another version); a string
    saying what is wrong when its files are damaged (truncated, not JSON/CSV, rows that are not the meta's)."""
    rows_path, meta_path = _index_files(cache_dir, root)
    if not meta_path.exists() and not rows_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        with open(rows_path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            if next(reader) != ["path", "identity", "size", "mtime_ns"]:
                return f"{rows_path.name} has no index header"
            rows = list(reader)
    except (OSError, ValueError, StopIteration, csv.Error) as e:
        return f"{type(e).__name__}: {str(e)[:80]}"
    if not isinstance(meta, dict) or not isinstance(meta.get("dirs"), dict):
        return (
            f"{meta_path.name} is not an index description"  # valid JSON of the wrong shape: as corrupt as a cut file
        )
    if meta.get("version") != INDEX_VERSION:
        return None  # written by another version: rescanned, nothing wrong with it
    if meta.get("files") != len(rows):
        return f"{rows_path.name} holds {len(rows)} rows, its description {meta.get('files')}"
    try:
        cols = list(zip(*rows)) if rows else [(), (), (), ()]
        index = FileIndex(
            root,
            list(cols[0]),
            list(cols[1]),
            np.asarray(cols[2], dtype=np.int64),
            np.asarray(cols[3], dtype=np.int64),
            {k: int(v) for k, v in meta["dirs"].items()},
            source="reused",
        )
    except (ValueError, KeyError, TypeError) as e:
        return f"{rows_path.name}: {type(e).__name__}"
    if index.fingerprint() != meta.get("fingerprint"):
        return f"{rows_path.name} is not the list its description was written for"
    return index, meta


def _unchanged(index: FileIndex, check: str) -> str | None:
    """None if the tree still holds exactly the indexed files, else what changed (for the log)."""
    root = str(index.root)
    for rel_dir, mtime in index.dirs.items():
        try:
            if os.stat(f"{root}/{rel_dir}" if rel_dir else root).st_mtime_ns != mtime:
                return f"folder {rel_dir or '.'} changed"
        except OSError:
            return f"folder {rel_dir} is gone"
    if check == "files":
        for rel, size, mtime in zip(index.rel, index.sizes.tolist(), index.mtimes.tolist()):
            try:
                st = os.stat(f"{root}/{rel}")
                if st.st_size != size or st.st_mtime_ns != mtime:
                    return f"file {rel} changed"
            except OSError:
                if size != -1:
                    return f"file {rel} is gone"
    return None


def load_index(root: str | Path, cache_dir: str | Path | None, check: str = "files", threads: int = 8) -> FileIndex:
    """The index of ``root``: reused from ``cache_dir`` when the tree did not change (see the module docstring),
    else scanned and written there. ``cache_dir=None``: always scanned, nothing written."""
    if check not in CHECKS:
        raise ConfigError(f"data.index_check={check!r}: expected one of {', '.join(CHECKS)}")
    root = Path(root).expanduser()
    t0 = time.perf_counter()
    directory = None if cache_dir is None else Path(cache_dir).expanduser()
    if directory is not None and directory.is_dir():
        found = _read_index(root, directory)
        if isinstance(found, str):
            log.warning("the file index of data.root=%s in %s is damaged (%s): rescanning", root, directory, found)
        elif found is not None:
            index, _ = found
            changed = _unchanged(index, check)
            if changed is None:
                log.info(
                    "file index of data.root=%s reused (%d files, %d folders checked%s, %.1f s)",
                    root,
                    len(index),
                    len(index.dirs),
                    " and every file" if check == "files" else "",
                    time.perf_counter() - t0,
                )
                return index
            log.info("file index of data.root=%s is out of date (%s): rescanning", root, changed)
    index = scan_tree(root, threads)
    if directory is not None:
        try:
            written = write_index(index, directory)
            log.info(
                "data.root=%s scanned: %d files in %d folders (%.1f s), index written to %s",
                root,
                len(index),
                len(index.dirs),
                time.perf_counter() - t0,
                written,
            )
        except OSError as e:
            log.warning("could not write the file index to %s (%s): the next run scans again", directory, e)
    return index


def select_files(
    index: FileIndex,
    min_images: int = 1,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """The files of the index that ``include`` / ``exclude`` keep, of identities with >= ``min_images`` of them.
    Files whose suffix says they are not images (``.txt``, ``.json``, ...: :data:`NON_IMAGE_SUFFIXES`) are left out
    first and counted in the log.

    Returns (paths as strings, labels 0..n-1, identity names, row of each file in the index). Strings, not
    ``Path`` objects: making 200 k of those costs 1.5 s here, and every consumer takes either.
    """
    import fnmatch

    inc = [] if include is None else [include] if isinstance(include, str) else [str(v) for v in include]
    exc = [] if exclude is None else [exclude] if isinstance(exclude, str) else [str(v) for v in exclude]

    non_image = [i for i, r in enumerate(index.rel) if is_non_image(r)]
    rows = np.arange(len(index))
    if non_image:  # notes and metadata beside the photos: never decoded, never counted as files
        log.info(
            "data.root=%s: skipped %d non-image file(s) (%s)",
            index.root,
            len(non_image),
            count_suffixes(index.rel[i] for i in non_image),
        )
        rows = np.setdiff1d(rows, non_image)
    if inc or exc:
        keep = np.array(
            [
                (not inc or any(fnmatch.fnmatchcase(index.rel[i], g) for g in inc))
                and not any(fnmatch.fnmatchcase(index.rel[i], g) for g in exc)
                for i in rows.tolist()
            ],
            dtype=bool,
        )
        filtered = int((~keep).sum())
        if filtered:
            log.info(
                "data.root=%s: %d file(s) left out by data.include=%s / data.exclude=%s", index.root, filtered, inc, exc
            )
        rows = rows[keep]
    else:
        filtered = 0
    ids_of: dict[str, int] = {}
    inverse = np.fromiter(
        (ids_of.setdefault(index.identity[i], len(ids_of)) for i in rows.tolist()), dtype=np.int64, count=len(rows)
    )
    names_all = np.asarray(list(ids_of), dtype=object)
    order = np.argsort(names_all.astype(str), kind="stable")  # labels follow sorted identity names
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    names_all, inverse = names_all[order], rank[inverse]
    counts = np.bincount(inverse, minlength=len(names_all))
    kept_ids = np.flatnonzero(counts >= min_images)
    if not len(kept_ids):
        hint = f" after data.include={inc} / data.exclude={exc} left out {filtered} file(s)" if filtered else ""
        raise ConfigError(f"data.root={str(index.root)!r} has no identity sub-folder with >= {min_images} files{hint}")
    relabel = np.full(len(names_all), -1, np.int64)
    relabel[kept_ids] = np.arange(len(kept_ids))
    labels = relabel[inverse]
    keep = labels >= 0
    rows, labels = rows[keep], labels[keep]
    root = str(index.root)
    paths = [f"{root}/{index.rel[i]}" for i in rows.tolist()]
    return paths, labels, [str(n) for n in names_all[kept_ids]], rows
