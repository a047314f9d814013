"""What ``data=folder`` costs as the folder grows: scan, index reuse, cache build (time, peak memory), a killed build
continued, and the start of a re-run, on identity-folder trees of real JPEG files.

    python benchmarks/make_identity_tree.py /tmp/faces_20k --identities 1000 --per-identity 20
    python benchmarks/make_identity_tree.py /tmp/faces_200k --identities 10000 --per-identity 20
    python benchmarks/bench_folder_scale.py /tmp/faces_20k /tmp/faces_200k --cache /tmp/bench_cache

Each step runs in a fresh Python process (``--step``), so peak RSS (``ru_maxrss``) is that step's alone; DataLoader
decode workers are reported separately (the largest child). Baseline in the same run: a plain ``os.walk`` listing
of the same tree (what the scan would cost without the index). The page cache is warm (the trees were just
written or read); on a cold or network filesystem the scan costs more and the index saves more.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mb() -> tuple[float, float]:
    """Peak RSS of this process and of its largest finished child, in MB (Linux reports KB)."""
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    )


class AnonPeak:
    """Samples this process's anonymous resident memory (``RssAnon``: heap, arrays, not file pages) every 20 ms
    and keeps the peak. ``ru_maxrss`` also counts the pages of a memory-mapped cache that were read, which the
    kernel can drop at any time; ``RssAnon`` is what the data size must not drive."""

    def __init__(self) -> None:
        import threading

        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def now_kb() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self.now_kb())
            self._stop.wait(0.02)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak_kb, self.now_kb()) / 1024


def step(name: str, root: str, cache: str, size: int, workers: int) -> dict:
    """One measured step, in this (fresh) process; the package imports (torch, Lightning) are timed apart."""
    t_import = time.perf_counter()
    if name != "walk":
        from facenet_pl.data.file_index import load_index
        from facenet_pl.data.folder import FolderDataModule
    imports = time.perf_counter() - t_import
    t0 = time.perf_counter()
    if name == "walk":  # the baseline: list every file with os.walk, stat each (what a cache key needs)
        n = 0
        for dirpath, _, filenames in os.walk(root):
            for f in filenames:
                os.stat(os.path.join(dirpath, f))
                n += 1
        return {"seconds": time.perf_counter() - t0, "files": n}
    if name in ("scan", "index_files", "index_dirs"):
        index = load_index(root, cache, check="dirs" if name == "index_dirs" else "files")
        return {"seconds": time.perf_counter() - t0, "files": len(index), "source": index.source}
    if name in ("build", "rerun"):  # build: index + cache from scratch; rerun: everything already there
        anon_before = AnonPeak.now_kb() / 1024
        anon = AnonPeak()
        dm = FolderDataModule(
            root=root,
            image_size=size,
            cache_dir=cache,
            decode_workers=workers,
            p="auto",
            k=4,
            batches_per_epoch="auto",
            seed=0,
        )
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        anon_peak = anon.stop()
        self_mb, child_mb = _rss_mb()
        cache_bytes = sum(f.stat().st_size for f in Path(cache).glob("images-*.npy"))
        return {
            "seconds": time.perf_counter() - t0,
            "images": len(dm.train_set),
            "first_batch": list(batch[0].shape),
            "rss_mb": self_mb,
            "anon_peak_mb": anon_peak,
            "anon_after_imports_mb": anon_before,
            "worker_rss_mb": child_mb,
            "cache_gb": cache_bytes / 1e9,
            "imports": imports,
        }
    if name == "decode1":  # JPEG decode + crop + resize on one core (no workers), a sample of 3,000 files
        from facenet_pl.data.images import decode_images

        index = load_index(root, cache)
        rng = np.random.default_rng(0)
        pick = rng.choice(len(index), min(3000, len(index)), replace=False)
        paths = [index.root / index.rel[i] for i in pick]
        t0 = time.perf_counter()
        decode_images(paths, size, num_workers=0)
        return {"seconds": time.perf_counter() - t0, "images": len(paths)}
    if name == "nocache":  # data.cache=false: PK batches decoded from the files by `workers` DataLoader workers
        dm = FolderDataModule(
            root=root, image_size=size, cache_dir=cache, cache=False, num_workers=workers, p=32, k=4,
            batches_per_epoch=60, seed=0,
        )  # fmt: skip
        dm.setup("fit")
        it = iter(dm.train_dataloader())
        next(it)  # workers started, first batch in
        t0 = time.perf_counter()
        n = sum(len(next(it)[0]) for _ in range(40))
        self_mb, child_mb = _rss_mb()
        return {"seconds": time.perf_counter() - t0, "images": n, "rss_mb": self_mb}
    raise ValueError(name)


def run_step(name: str, root: str, cache: str, size: int, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--step", name, root, "--cache", cache, "--size", str(size)]
    cmd += ["--workers", str(workers)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def killed_build(root: str, cache: str, size: int, workers: int, fraction: float = 0.5) -> dict:
    """Start a build, SIGKILL it once ``fraction`` of its chunks are recorded, then time the continued build."""
    cmd = [sys.executable, __file__, "--step", "build", root, "--cache", cache, "--size", str(size)]
    cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.perf_counter()
    recorded, chunks = 0, None
    while proc.poll() is None:
        for prog in Path(cache).glob("progress-*.json"):
            try:
                recorded = len(json.loads(prog.read_text())["chunks"])
                chunks = -(-json.loads(prog.read_text())["n"] // 1024)
            except (OSError, ValueError):
                pass
        if chunks and recorded >= fraction * chunks:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.2)
    killed_after = time.perf_counter() - t0
    res = run_step("build", root, cache, size, workers)
    return {"killed_after_s": killed_after, "chunks_recorded": recorded, "chunks": chunks,
            "continued_s": res["seconds"]}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="+")
    ap.add_argument("--cache", default="/tmp/bench_folder_cache")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--step")
    ap.add_argument("--no-kill", action="store_true", help="skip the killed-and-continued build")
    a = ap.parse_args(argv)
    if a.step:
        print(json.dumps(step(a.step, a.roots[0], a.cache, a.size, a.workers)))
        return
    from _common import machine, table

    rows = []
    for root in a.roots:
        cache = str(Path(a.cache) / Path(root).name)
        shutil.rmtree(cache, ignore_errors=True)
        walk = run_step("walk", root, cache, a.size, a.workers)
        scan = run_step("scan", root, cache, a.size, a.workers)
        files = run_step("index_files", root, cache, a.size, a.workers)
        dirs = run_step("index_dirs", root, cache, a.size, a.workers)
        kill = None
        if not a.no_kill:
            kill = killed_build(root, cache, a.size, a.workers)
            shutil.rmtree(cache, ignore_errors=True)
        build = run_step("build", root, cache, a.size, a.workers)
        rerun = run_step("rerun", root, cache, a.size, a.workers)
        one_core = run_step("decode1", root, cache, a.size, a.workers)
        nocache = run_step("nocache", root, cache, a.size, a.workers)
        row = {
            "tree": Path(root).name,
            "files": walk["files"],
            "os.walk+stat s": f"{walk['seconds']:.1f}",
            "index scan s": f"{scan['seconds']:.1f}",
            "reuse (files) s": f"{files['seconds']:.2f}",
            "reuse (dirs) s": f"{dirs['seconds']:.2f}",
            "cache build s": f"{build['seconds']:.0f}",
            "img/s": f"{build['images'] / build['seconds']:.0f}",
            "build peak anon MB": f"{build['anon_peak_mb']:.0f} ({build['anon_after_imports_mb']:.0f} imports)",
            "build peak RSS MB": f"{build['rss_mb']:.0f}",
            "worker RSS MB": f"{build['worker_rss_mb']:.0f}",
            "cache GB": f"{build['cache_gb']:.2f}",
            "re-run start s": f"{rerun['seconds']:.1f} (+{rerun['imports']:.0f} imports)",
            "re-run peak anon MB": f"{rerun['anon_peak_mb']:.0f}",
            "re-run peak RSS MB": f"{rerun['rss_mb']:.0f}",
            "decode img/s, 1 core": f"{one_core['images'] / one_core['seconds']:.0f}",
            f"no-cache img/s, {a.workers} workers": f"{nocache['images'] / nocache['seconds']:.0f}",
        }
        if kill:
            row["killed at"] = f"{kill['chunks_recorded']}/{kill['chunks']} chunks"
            row["continued s"] = f"{kill['continued_s']:.0f}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(machine())
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
