"""What checking a decoded-image cache costs at scale: every chunk is hashed at every open (no sampling).

Writes a valid cache of N images at S px (default 200,000 x 112 px, 7.5 GB, the VGGFace2-crop scale of
benchmarks/README.md's folder table) with the library's own layout, then times ``open_cache`` with 1 hashing
thread (the baseline) and with ``HASH_THREADS``, each twice (the first read may come from disk, the second from
the page cache). Needs the cache's size free in --dir; removes it afterwards.

    python benchmarks/bench_cache_check.py --dir /tmp/cachecheck            # 200 k x 112 px
    python benchmarks/bench_cache_check.py --dir /tmp/cachecheck --n 20000  # quicker
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facenet_pl.data import decode_cache as dc  # noqa: E402


def write_cache(directory: Path, n: int, size: int) -> dc.CacheFiles:
    files = dc.CacheFiles(directory, "bench")
    images = np.lib.format.open_memmap(files.images, mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
    rng = np.random.default_rng(0)
    for start in range(0, n, dc.CHUNK):
        block = images[start : start + dc.CHUNK]
        block[:] = rng.integers(0, 256, (1, 3, size, size), dtype=np.uint8)  # each chunk its own pattern
        block[:, 0, 0, 0] = np.arange(len(block)) % 256
    images.flush()
    hashes = dc._chunk_hashes(images)
    del images
    ok = np.ones(n, bool)
    np.save(files.ok, ok)
    meta = dc._meta(files, n, size, None, "crop", False, "bench", ok, hashes)
    files.meta.write_text(json.dumps(meta))
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=112)
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    files = write_cache(args.dir, args.n, args.size)
    gb = files.images.stat().st_size / 1e9
    print(f"wrote {args.n} images at {args.size} px: {gb:.2f} GB in {time.perf_counter() - t:.0f} s")
    default = dc.HASH_THREADS
    rows = []
    try:
        for threads in (1, default):
            dc.HASH_THREADS = threads
            for attempt in ("first", "second"):
                t = time.perf_counter()
                dc.open_cache(files, args.n, args.size)
                s = time.perf_counter() - t
                rows.append((threads, attempt, s))
                print(f"open_cache, {threads} hashing thread(s), {attempt} open: {s:.1f} s ({gb / s:.2f} GB/s)")
    finally:
        dc.HASH_THREADS = default
        shutil.rmtree(args.dir)
    base = min(s for th, _, s in rows if th == 1)
    best = min(s for th, _, s in rows if th == default)
    print(f"{default} threads vs 1: {base / best:.2f}x faster; complete check of {gb:.2f} GB: {best:.1f} s")


if __name__ == "__main__":
    main()
