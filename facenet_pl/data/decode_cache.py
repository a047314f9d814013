"""The on-disk cache of decoded images: keyed by the file list, built streaming and resumably, checked before use.

A cache is three files in ``data.cache_dir``: ``images-<key>.npy`` (uint8 N x 3 x S x S, memory-mapped by
later runs), ``ok-<key>.npy`` (which files decoded) and ``meta-<key>.json``, written last, holding what the
cache was built from and a BLAKE2b hash of the ok-mask and of every chunk of images. A cache without its
meta file is incomplete and never used. On open the header, the file lengths and the ok-mask are checked,
and every image chunk is hashed, whatever the size (in :data:`HASH_THREADS` threads: BLAKE2b releases the GIL),
so no damaged chunk is ever trained on: a cache that fails is rebuilt with a warning, never trusted.

A cache is built chunk by chunk (:data:`CHUNK` images) into ``images-<key>.npy.partial``: each chunk is decoded
by the DataLoader workers, written at its place in the file, synced, and only then recorded (with its hash) in
``progress-<key>.json``. Peak memory is a few chunks, whatever the size of the data. A build that was killed
continues where it stopped (the recorded chunks are checked against their hashes first); the partial file is
renamed into place only when every chunk is in. A full disk while writing removes the partial files and falls
back to the images decoded in memory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet_pl.data.images import DEFAULT_FIT
from facenet_pl.utils.errors import free_space, is_disk_full
from facenet_pl.utils.fileio import atomic_write, remove_stale_temps

log = logging.getLogger(__name__)

#: Bump when decoding changes what a file decodes to (2: EXIF orientation applied), so old caches miss.
CACHE_VERSION = 2
CHUNK = 1024  # images per hashed chunk
#: Threads hashing a cache's chunks on open, or a killed build's recorded chunks before it continues (measured in
#: benchmarks/README.md, "Cache check at scale").
HASH_THREADS = max(1, min(4, os.cpu_count() or 1))


def cache_key(
    paths: Sequence[Path],
    size: int,
    crop: int | None,
    fit: str = DEFAULT_FIT,
    grayscale: bool = False,
    stats: tuple[Sequence[int], Sequence[int]] | None = None,
) -> str:
    """Hash of the decode settings and every file's path, size and mtime (a changed tree misses the cache).

    ``stats``: (sizes, mtimes) of ``paths`` already known (the file index); else every file is stat-ed. A file
    that cannot be stat-ed (broken symlink, symlink loop; size -1 in ``stats``) is hashed as such; decoding then
    skips it.
    """
    h = hashlib.sha1(f"v{CACHE_VERSION}:{size}:{crop}:{fit}:{int(grayscale)}".encode())
    if hasattr(paths, "cache_identity"):  # records of a RecordIO file: the file's identity and the records chosen
        h.update(paths.cache_identity().encode())
        return h.hexdigest()[:16]
    if stats is not None:
        for p, size_, mtime in zip(paths, stats[0], stats[1], strict=True):
            h.update((f"{p}:{size_}:{mtime}\n" if size_ >= 0 else f"{p}:unreadable\n").encode())
        return h.hexdigest()[:16]
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}:unreadable\n".encode())
    return h.hexdigest()[:16]


def _hash(arr: np.ndarray) -> str:
    return hashlib.blake2b(memoryview(np.ascontiguousarray(arr)).cast("B"), digest_size=16).hexdigest()


def _chunk_hashes(images: np.ndarray, which: Sequence[int] | None = None) -> list[str]:
    """The hashes of the chunks ``which`` (all by default), computed in :data:`HASH_THREADS` threads."""
    from concurrent.futures import ThreadPoolExecutor

    idx = list(range(-(-len(images) // CHUNK)) if which is None else which)
    if HASH_THREADS == 1 or len(idx) < 2:
        return [_hash(images[c * CHUNK : (c + 1) * CHUNK]) for c in idx]
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        return list(pool.map(lambda c: _hash(images[c * CHUNK : (c + 1) * CHUNK]), idx))


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

    @property
    def partial(self) -> Path:
        return self.directory / f"images-{self.key}.npy.partial"

    @property
    def progress(self) -> Path:
        return self.directory / f"progress-{self.key}.json"

    def all(self) -> list[Path]:
        return [self.images, self.ok, self.meta]

    def remove_build(self) -> None:
        for f in (self.partial, self.progress):
            f.unlink(missing_ok=True)

    def remove(self) -> None:
        """Remove the cache and any interrupted build of it (the lock file stays: another process may hold it)."""
        for f in (*self.all(), self.partial, self.progress):
            f.unlink(missing_ok=True)

    def nbytes(self) -> int:
        """Bytes on disk, an interrupted build's partial file included (allocated blocks: it is sparse)."""
        total = sum(f.stat().st_size for f in self.all() if f.exists())
        for f in (self.partial, self.progress):
            if f.exists():
                total += f.stat().st_blocks * 512
        return total

    def being_built(self) -> bool:
        """Whether another process holds this cache's build lock now."""
        import fcntl

        lock = self.directory / f"lock-{self.key}"
        if not lock.exists():
            return False
        with open(lock, "a+b") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            except OSError:
                return False
            fcntl.flock(f, fcntl.LOCK_UN)
        return False


class CacheCheckFailed(Exception):
    """The cache on disk is not what its meta file says: rebuild it."""


def open_cache(files: CacheFiles, n: int, size: int, hash_chunks: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map a cache after checking it (every chunk's hash unless ``hash_chunks=False``: a cache this process
    has just written and hashed); :class:`CacheCheckFailed` says why it cannot be trusted."""
    try:
        meta = json.loads(files.meta.read_text())
        ok = np.load(files.ok)
        images = np.load(files.images, mmap_mode="r")
    except (OSError, ValueError, EOFError, json.JSONDecodeError) as e:  # truncated, zero-length, bad header
        raise CacheCheckFailed(f"unreadable ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("chunk_hashes", []), list):
        raise CacheCheckFailed("its meta file is not a JSON object with a list of chunk hashes")
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
    which = list(range(chunks)) if hash_chunks else []
    for c, h in zip(which, _chunk_hashes(images, which)):
        if h != expected[c]:
            raise CacheCheckFailed(f"images {c * CHUNK}-{min((c + 1) * CHUNK, n) - 1} do not match their hash")
    return images, ok


def _meta(files: CacheFiles, n: int, size: int, crop, fit, grayscale, source, ok, chunk_hashes) -> dict:
    return {
        "version": CACHE_VERSION,
        "key": files.key,
        "n": int(n),
        "size": int(size),
        "crop": crop,
        "fit": fit,
        "grayscale": bool(grayscale),
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "readable": int(ok.sum()),
        "ok_hash": _hash(ok),
        "chunk": CHUNK,
        "chunk_hashes": chunk_hashes,
    }


def _npy_header(n: int, size: int) -> bytes:
    """The .npy header of a uint8 (n, 3, size, size) array (what np.save writes before the data)."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf,
        {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
            "fortran_order": False,
            "shape": (n, 3, size, size),
        },
    )
    return buf.getvalue()


def _resume_state(files: CacheFiles, n: int, size: int, header: bytes) -> dict[int, dict]:
    """Chunks a killed build already wrote, every one checked against its recorded hash; {} when there is nothing
    to trust."""
    if not files.partial.exists() or not files.progress.exists():
        files.remove_build()
        return {}
    try:
        prog = json.loads(files.progress.read_text())
        if not isinstance(prog, dict) or not isinstance(prog.get("chunks"), dict):
            raise ValueError("the progress file is not a JSON object with its chunks")
        if prog.get("version") != CACHE_VERSION or prog.get("n") != n or prog.get("size") != size:
            raise ValueError("other images")
        done = {int(c): v for c, v in prog["chunks"].items()}
        for c, v in done.items():  # every index the finish will use is inside its chunk: else the file is damaged
            span = min(CHUNK, n - c * CHUNK)
            bad = v["bad"]
            if not 0 <= c * CHUNK < n or not isinstance(bad, list):
                raise ValueError(f"chunk {c} is not one of these images' chunks")
            if not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < span for b in bad):
                raise ValueError(f"chunk {c} names unreadable images outside it")
        with open(files.partial, "rb") as f:
            if f.read(len(header)) != header:
                raise ValueError("header")
        which = sorted(done)  # every recorded chunk, whatever the size: a damaged one is never kept
        images = np.memmap(files.partial, np.uint8, "r", offset=len(header), shape=(n, 3, size, size))
        for c, h in zip(which, _chunk_hashes(images, which)):
            if h != done[c]["hash"]:
                raise ValueError(f"chunk {c} does not match its hash")
        del images
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        _warn(f"the interrupted cache build {files.partial} cannot be continued ({str(e)[:100]}): starting it again")
        files.remove_build()
        return {}
    return done


@contextmanager
def _build_lock(files: CacheFiles) -> Iterator[None]:
    """An exclusive lock on ``lock-<key>`` in the cache folder (``fcntl.flock``; honoured across processes on one
    machine and, where the filesystem supports it, across nodes): DDP ranks, or runs started together, that need
    the same cache build it once; the others wait and then find it built."""
    import fcntl

    with open(files.directory / f"lock-{files.key}", "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is building or checking the cache %s: waiting for it", files.images)
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:  # a filesystem without locks: go on unlocked, as before
            log.warning("cannot lock %s (%s): building without a lock", f.name, e)
        try:
            yield
        finally:
            try:
                fcntl.flock(f, fcntl.LOCK_UN)
            except OSError:
                pass


def build_cache(
    files: CacheFiles,
    paths: Sequence[Path],
    size: int,
    crop: int | None,
    num_workers: int = 0,
    source: str = "",
    fit: str = DEFAULT_FIT,
    grayscale: bool = False,
) -> None:
    """Decode ``paths`` into the cache ``files``, chunk by chunk (see the module docstring): resumable, memory
    bounded by a few chunks. A kill leaves the partial files for the next run to continue; OSError (a full
    disk included) is raised to the caller."""
    from torch.utils.data import DataLoader

    from facenet_pl.data.images import _Decode

    n = len(paths)
    header = _npy_header(n, size)
    image_bytes = 3 * size * size
    total = len(header) + n * image_bytes
    chunks = -(-n // CHUNK)
    done = _resume_state(files, n, size, header)
    todo = [c for c in range(chunks) if c not in done]
    log.info(
        "building the decoded-image cache %s: %d images at %d px, %.2f GB (%s)%s",
        files.images,
        n,
        size,
        total / 1e9,
        free_space(files.directory),
        f"; continuing an interrupted build, {len(done)} of {chunks} chunks already in" if done else "",
    )
    fd = os.open(files.partial, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not done:
            os.ftruncate(fd, total)  # sparse: the disk fills as chunks land
            os.pwrite(fd, header, 0)
        loader = DataLoader(
            _Decode(paths, size, crop, fit, grayscale),
            batch_sampler=[list(range(c * CHUNK, min(n, (c + 1) * CHUNK))) for c in todo],
            num_workers=num_workers,
            prefetch_factor=2 if num_workers else None,
        )
        t0, decoded, next_report = time.perf_counter(), 0, time.perf_counter() + 30
        for c, (imgs, good) in zip(todo, loader):
            arr = np.ascontiguousarray(imgs.numpy())
            view = memoryview(arr).cast("B")
            offset, written = len(header) + c * CHUNK * image_bytes, 0
            while written < len(view):
                written += os.pwrite(fd, view[written:], offset + written)
            os.fdatasync(fd)  # the chunk is on disk before the progress file says so
            done[c] = {"hash": _hash(arr), "bad": np.flatnonzero(~good.numpy()).tolist(), "order": len(done)}
            prog = {"version": CACHE_VERSION, "n": n, "size": size, "chunks": {str(k): v for k, v in done.items()}}
            atomic_write(files.progress, lambda f, prog=prog: f.write(json.dumps(prog).encode()))
            decoded += len(arr)
            if time.perf_counter() >= next_report:
                rate = decoded / (time.perf_counter() - t0)
                log.info(
                    "decoded-image cache: %d of %d chunks in (%.0f images/s, about %.0f s to go)",
                    len(done),
                    chunks,
                    rate,
                    (n - len(done) * CHUNK) / max(rate, 1e-9),
                )
                next_report = time.perf_counter() + 30
    finally:
        os.close(fd)
    ok = np.ones(n, dtype=bool)
    for c, v in done.items():
        ok[np.asarray(v["bad"], dtype=np.int64) + c * CHUNK] = False
    hashes = [done[c]["hash"] for c in range(chunks)]
    os.replace(files.partial, files.images)
    atomic_write(files.ok, lambda f: np.save(f, ok))
    meta = _meta(files, n, size, crop, fit, grayscale, source, ok, hashes)
    atomic_write(files.meta, lambda f: f.write(json.dumps(meta, indent=1).encode()))
    files.progress.unlink(missing_ok=True)


def cached_decode(
    paths: Sequence[Path],
    size: int,
    crop: int | None,
    cache_dir: str | Path | None,
    num_workers: int = 0,
    source: str = "",
    fit: str = DEFAULT_FIT,
    grayscale: bool = False,
    stats: tuple[Sequence[int], Sequence[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images and the readable mask of ``paths``: from a checked cache, else decoded (in ``num_workers``
    processes) into a new cache (:func:`build_cache`), which is then memory-mapped.

    ``cache_dir=None``: decode in memory, write nothing. ``source`` (the data root) is recorded so that
    ``facenet-pl cache list`` can say what a cache holds and which caches a newer one superseded. ``stats``:
    (sizes, mtimes) of ``paths`` from the file index, so the cache key needs no second stat of every file.
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
    files = CacheFiles(directory, cache_key(paths, size, crop, fit, grayscale, stats))
    if files.meta.exists():  # a complete cache: checked and opened without the lock, so ranks open it in parallel
        try:
            return _hit(files, len(paths), size)
        except CacheCheckFailed:
            pass  # checked again under the lock, which says why and rebuilds it once
    try:
        return _build_or_open(files, paths, size, crop, num_workers, source, fit, grayscale, decode)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        _warn(
            f"data.cache_dir={str(cache_dir)!r} is not writable ({e.strerror}): decoding into memory, nothing "
            "cached. Set data.cache_dir to a writable folder, or null to skip caching."
        )
        return decode()


def _hit(files: CacheFiles, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    images, ok = open_cache(files, n, size)
    log.info("decoded-image cache hit: %s (checked)", files.images)
    return images, ok


def _build_or_open(files, paths, size, crop, num_workers, source, fit, grayscale, decode):
    """Under the cache's lock: open it if another process built it meanwhile, else build it (a full disk: decode
    into memory instead)."""
    directory = files.directory
    with _build_lock(files):  # one builder per cache: other ranks, nodes or runs wait, then open it
        if files.meta.exists() or files.images.exists():
            try:
                return _hit(files, len(paths), size)
            except CacheCheckFailed as e:
                _warn(f"decoded-image cache {files.images} failed its check ({e}): rebuilding it")
                files.remove()
        try:
            build_cache(files, paths, size, crop, num_workers, source, fit, grayscale)
        except OSError as e:
            files.remove()  # the partial build too
            if not is_disk_full(e):
                raise
            need = len(paths) * 3 * size * size
            _warn(
                f"disk full writing the decoded-image cache in {directory} ({free_space(directory)}; it needs "
                f"{need / 1e9:.2f} GB): training from memory this time. Free space, point data.cache_dir "
                "elsewhere, or set data.cache_dir=null to stop caching."
            )
            return decode()
        log.info("decoded-image cache written: %s (%.2f GB)", files.images, files.nbytes() / 1e9)
        return open_cache(files, len(paths), size, hash_chunks=False)  # just written and hashed chunk by chunk


def _warn(msg: str) -> None:
    log.warning(msg)
    warnings.warn(msg, stacklevel=3)


@dataclass
class CacheEntry:
    """One cache in a cache folder, as ``facenet-pl cache list`` shows it."""

    files: CacheFiles
    meta: dict | None
    #: "current"; "superseded" (a newer cache of the same source and size); "interrupted" (a build that was
    #: stopped: the next run with the same data continues it); "building" (another process is building it
    #: now); "incomplete" (files without their meta file); "damaged" (a meta file of the wrong shape, or image
    #: files shorter or longer than it says: the next run rebuilds it)
    state: str
    #: An interrupted build's progress (images, size, chunks done) for the listing; None otherwise.
    progress: dict | None = None


def _meta_fits(files: CacheFiles, meta) -> bool:
    """A meta file that is a JSON object describing n images of size px, whose image and mask files have the
    lengths that describes (a cache cut short by a full disk or a copy is not "current"). Cheap: no hashing."""
    try:
        if not isinstance(meta, dict) or not isinstance(meta.get("chunk_hashes"), list):
            return False
        n, size = int(meta["n"]), int(meta["size"])
        expected = len(_npy_header(n, size)) + n * 3 * size * size
        return files.images.stat().st_size == expected and files.ok.stat().st_size > n
    except (OSError, KeyError, TypeError, ValueError):
        return False


def list_caches(cache_dir: str | Path) -> list[CacheEntry]:
    """Every cache in ``cache_dir``; of several with the same (source, size, crop, fit, grayscale) the newest
    (meta file written last) is current, the others superseded."""
    directory = Path(cache_dir).expanduser()
    keys = sorted(
        {
            f.name.split("-", 1)[1].rsplit(".", 1)[0]
            for f in directory.glob("*-*.*")
            if f.name.split("-", 1)[0] in ("images", "ok", "meta", "progress")
            and ".tmp-" not in f.name
            and not f.name.endswith(".partial")
        }
        | {f.name[len("images-") : -len(".npy.partial")] for f in directory.glob("images-*.npy.partial")}
    )
    entries = []
    for key in keys:
        files = CacheFiles(directory, key)
        try:
            meta = json.loads(files.meta.read_text())
        except FileNotFoundError:
            meta = None
        except (OSError, ValueError):
            meta = "unreadable"
        state = "current"
        # a meta file that is there but not a description of these files (not JSON, `null`, the wrong shape, files
        # cut short) is damaged; only a missing one means the build never finished
        if files.meta.exists() and (not isinstance(meta, dict) or not _meta_fits(files, meta)):
            entries.append(CacheEntry(files, None, "damaged"))
            continue
        if meta is None:
            state = "incomplete"
            if files.partial.exists() or files.progress.exists():
                state = "building" if files.being_built() else "interrupted"
                try:  # what the build has done so far, for the listing
                    prog = json.loads(files.progress.read_text())
                    if not isinstance(prog, dict) or not isinstance(prog.get("chunks"), dict):
                        raise TypeError("not a progress object")
                    chunks = -(-int(prog["n"]) // CHUNK)
                    meta_view = {
                        "n": prog["n"],
                        "size": prog["size"],
                        "source": f"{len(prog['chunks'])} of {chunks} chunks decoded",
                    }
                except (OSError, ValueError, KeyError, TypeError):
                    meta_view = None
                entries.append(CacheEntry(files, None, state, meta_view))
                continue
        entries.append(CacheEntry(files, meta, state))
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


def prunable(entries: list[CacheEntry], everything: bool = False) -> list[CacheEntry]:
    """The caches ``facenet-pl cache prune`` removes: superseded, damaged and interrupted ones (``everything``: the
    current ones too); never one being built."""
    return [e for e in entries if e.state != "building" and (everything or e.state != "current")]


def describe_cache(e: CacheEntry) -> str:
    """One listing line: key, state, size, images, pixels, creation time, source."""
    m = e.meta or e.progress or {}
    return (
        f"{e.files.key:16}  {e.state:11}  {e.files.nbytes() / 1e6:8.1f}  {m.get('n', '?'):>7}  "
        f"{m.get('size', '?'):>4}  {m.get('created', '?'):19}  {m.get('source', '')}"
    )
