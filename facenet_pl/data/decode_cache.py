"""The on-disk cache of decoded images: keyed by the file list, written atomically, checked before it is trusted.

A cache is three files in ``data.cache_dir``: ``images-<key>.npy`` (uint8 N x 3 x S x S, memory-mapped by
later runs), ``ok-<key>.npy`` (which files decoded) and ``meta-<key>.json``, written last, holding what the
cache was built from and a BLAKE2b hash of the ok-mask and of every chunk of images. A cache without its
meta file is incomplete and never used. On open the header, the file lengths and the ok-mask are checked,
and the image chunks are hashed (all of them up to :data:`FULL_CHECK_BYTES`, else the first, the last and a
random sample): a cache that fails is rebuilt with a warning, never trusted. A full disk while writing
leaves no temp file and falls back to the images already decoded in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet_pl.fileio import atomic_write, free_space, is_disk_full, remove_stale_temps

log = logging.getLogger(__name__)

#: Bump when decoding changes what a file decodes to (2: EXIF orientation applied), so old caches miss.
CACHE_VERSION = 2
#: Caches up to this size are hashed completely on open (0.5 GB/s here: 163 MB in 0.3 s); larger ones on a sample.
FULL_CHECK_BYTES = 2 * 1024**3
CHUNK = 1024  # images per hashed chunk
SAMPLE_CHUNKS = 16


def cache_key(paths: Sequence[Path], size: int, crop: int | None, fit: str = "crop", grayscale: bool = False) -> str:
    """Hash of the decode settings and every file's path, size and mtime (a changed tree misses the cache).

    A file that cannot be stat-ed (broken symlink, symlink loop) is hashed as such; decoding then skips it.
    """
    h = hashlib.sha1(f"v{CACHE_VERSION}:{size}:{crop}:{fit}:{int(grayscale)}".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except OSError as e:
            h.update(f"{p}:unreadable:{e.errno}\n".encode())
    return h.hexdigest()[:16]


def _hash(arr: np.ndarray) -> str:
    return hashlib.blake2b(memoryview(np.ascontiguousarray(arr)).cast("B"), digest_size=16).hexdigest()


def _chunk_hashes(images: np.ndarray, which: Sequence[int] | None = None) -> list[str]:
    idx = range(-(-len(images) // CHUNK)) if which is None else which
    return [_hash(images[c * CHUNK : (c + 1) * CHUNK]) for c in idx]


@dataclass
class CacheFiles:
    """The three files of one cache."""

    directory: Path
    key: str

    @property
    def images(self) -> Path:
        return self.directory / f"images-{self.key}.npy"

    @property
    def ok(self) -> Path:
        return self.directory / f"ok-{self.key}.npy"

    @property
    def meta(self) -> Path:
        return self.directory / f"meta-{self.key}.json"

    def all(self) -> list[Path]:
        return [self.images, self.ok, self.meta]

    def remove(self) -> None:
        for f in self.all():
            f.unlink(missing_ok=True)

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.all() if f.exists())


class CacheCheckFailed(Exception):
    """The cache on disk is not what its meta file says: rebuild it."""


def open_cache(
    files: CacheFiles, n: int, size: int, full_check_bytes: int = FULL_CHECK_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map a cache after checking it; :class:`CacheCheckFailed` says why it cannot be trusted."""
    try:
        meta = json.loads(files.meta.read_text())
        ok = np.load(files.ok)
        images = np.load(files.images, mmap_mode="r")
    except (OSError, ValueError, EOFError, json.JSONDecodeError) as e:  # truncated, zero-length, bad header
        raise CacheCheckFailed(f"unreadable ({type(e).__name__}: {str(e)[:120]})") from None
    if meta.get("version") != CACHE_VERSION or meta.get("n") != n or meta.get("size") != size:
        raise CacheCheckFailed("its meta file describes other images")
    if images.shape != (n, 3, size, size) or images.dtype != np.uint8 or ok.shape != (n,) or ok.dtype != bool:
        raise CacheCheckFailed(f"shape {images.shape} / {ok.shape}, expected ({n}, 3, {size}, {size}) / ({n},)")
    if _hash(ok) != meta.get("ok_hash"):
        raise CacheCheckFailed("the readable-file mask does not match its hash")
    expected = meta.get("chunk_hashes") or []
    chunks = len(expected)
    if chunks != -(-n // CHUNK):
        raise CacheCheckFailed("its meta file lists the wrong number of chunks")
    if images.nbytes <= full_check_bytes:
        which = list(range(chunks))
    else:
        rng = np.random.default_rng()
        which = sorted({0, chunks - 1, *rng.choice(chunks, min(SAMPLE_CHUNKS, chunks), replace=False).tolist()})
    for c, h in zip(which, _chunk_hashes(images, which)):
        if h != expected[c]:
            raise CacheCheckFailed(f"images {c * CHUNK}-{min((c + 1) * CHUNK, n) - 1} do not match their hash")
    return images, ok


def write_cache(
    files: CacheFiles,
    images: np.ndarray,
    ok: np.ndarray,
    source: str,
    size: int,
    crop: int | None,
    fit: str = "crop",
    grayscale: bool = False,
) -> None:
    """Write the three files atomically, the meta file last (a cache without it is never used)."""
    meta = {
        "version": CACHE_VERSION,
        "key": files.key,
        "n": int(len(images)),
        "size": int(size),
        "crop": crop,
        "fit": fit,
        "grayscale": bool(grayscale),
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "readable": int(ok.sum()),
        "ok_hash": _hash(ok),
        "chunk": CHUNK,
        "chunk_hashes": _chunk_hashes(images),
    }
    atomic_write(files.images, lambda f: np.save(f, images))
    atomic_write(files.ok, lambda f: np.save(f, ok))
    atomic_write(files.meta, lambda f: f.write(json.dumps(meta, indent=1).encode()))


def cached_decode(
    paths: Sequence[Path],
    size: int,
    crop: int | None,
    cache_dir: str | Path | None,
    num_workers: int = 0,
    source: str = "",
    fit: str = "crop",
    grayscale: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Images and the readable mask of ``paths``: from a checked cache, else :func:`decode_images` them (in
    ``num_workers`` processes) and write the cache.

    ``cache_dir=None``: decode in memory, write nothing. ``source`` (the data root) is recorded so that
    ``facenet-pl cache list`` can say what a cache holds and which caches a newer one superseded.
    """
    from facenet_pl.data.images import decode_images

    def decode() -> tuple[np.ndarray, np.ndarray]:
        return decode_images(paths, size, crop, num_workers, fit=fit, grayscale=grayscale)

    if cache_dir is None:
        return decode()
    directory = Path(cache_dir).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _warn(
            f"data.cache_dir={str(cache_dir)!r} cannot be created ({e.strerror}): decoding into memory, "
            "nothing cached. Set data.cache_dir to a writable folder, or null to skip caching."
        )
        return decode()
    remove_stale_temps(directory)
    files = CacheFiles(directory, cache_key(paths, size, crop, fit, grayscale))
    if files.meta.exists() or files.images.exists():
        try:
            images, ok = open_cache(files, len(paths), size)
            log.info("decoded-image cache hit: %s (checked)", files.images)
            return images, ok
        except CacheCheckFailed as e:
            _warn(f"decoded-image cache {files.images} failed its check ({e}): rebuilding it")
            files.remove()
    images, ok = decode()
    try:
        write_cache(files, images, ok, source, size, crop, fit, grayscale)
    except OSError as e:
        files.remove()
        if not is_disk_full(e):
            raise
        _warn(
            f"disk full writing the decoded-image cache in {directory} ({free_space(directory)}; it needs "
            f"{images.nbytes / 1e9:.2f} GB): training from memory this time. Free space, point data.cache_dir "
            "elsewhere, or set data.cache_dir=null to stop caching."
        )
        return images, ok
    log.info("decoded-image cache written: %s (%.2f GB)", files.images, files.nbytes() / 1e9)
    return np.load(files.images, mmap_mode="r"), ok


def _warn(msg: str) -> None:
    log.warning(msg)
    warnings.warn(msg, stacklevel=3)


@dataclass
class CacheEntry:
    """One cache in a cache folder, as ``facenet-pl cache list`` shows it."""

    files: CacheFiles
    meta: dict | None
    state: str  # "current", "superseded" (a newer cache of the same source and size), "incomplete"


def list_caches(cache_dir: str | Path) -> list[CacheEntry]:
    """Every cache in ``cache_dir``; of several with the same (source, size, crop, fit, grayscale) the newest
    (meta file written last) is current, the others superseded."""
    directory = Path(cache_dir).expanduser()
    keys = sorted(
        {
            f.name.split("-", 1)[1].rsplit(".", 1)[0]
            for f in directory.glob("*-*.*")
            if f.name.split("-", 1)[0] in ("images", "ok", "meta") and ".tmp-" not in f.name
        }
    )
    entries = []
    for key in keys:
        files = CacheFiles(directory, key)
        try:
            meta = json.loads(files.meta.read_text())
        except (OSError, ValueError):
            meta = None
        entries.append(CacheEntry(files, meta, "incomplete" if meta is None else "current"))
    seen: set[tuple] = set()
    for e in sorted((e for e in entries if e.meta), key=lambda e: e.files.meta.stat().st_mtime_ns, reverse=True):
        what = (
            e.meta.get("source"),
            e.meta.get("size"),
            e.meta.get("crop"),
            e.meta.get("fit"),
            e.meta.get("grayscale"),
        )
        if what in seen:
            e.state = "superseded"
        seen.add(what)
    return entries
