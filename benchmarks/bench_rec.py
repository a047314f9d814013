"""Reading a RecordIO set (``data=rec``) against the same JPEGs as an identity folder (``data=folder``).

    python benchmarks/make_identity_tree.py /tmp/faces_20k --identities 1000 --per-identity 20
    python benchmarks/bench_rec.py /tmp/faces_20k --rec /tmp/faces_20k_rec --cache /tmp/bench_rec_cache

The tree's JPEG files are packed, bytes unchanged, into ``--rec/train.rec`` (insightface's layout, by
``tests/rec_writer.py``). Then, for each source and ``data.cache`` false / true, a fresh process builds the data
module, its training loader (PK batches of 32 x 4 at 112 px, ``data.num_workers=2``) and reads ``--batches``
batches: the time to the first batch (a cold start: index and, with the cache, its build; then a warm start that
reuses both) and the images per second after it. The folder is the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pack(tree: Path, out: Path) -> dict:
    """The tree's files as records, grouped by identity (insightface's layout); returns what was written."""
    from tests.rec_writer import write_rec

    folders = sorted(p for p in tree.iterdir() if p.is_dir())
    files = [(i, f) for i, d in enumerate(folders) for f in sorted(d.iterdir()) if f.suffix == ".jpg"]
    t = time.perf_counter()
    write_rec(out, [f.read_bytes() for _, f in files], [i for i, _ in files])
    return {"images": len(files), "identities": len(folders), "seconds": time.perf_counter() - t}


def step(source: str, root: str, cache: bool, cache_dir: str, batches: int) -> dict:
    """One measurement in this (fresh) process."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    from facenet_pl.data import FolderDataModule, RecDataModule

    cls = RecDataModule if source == "rec" else FolderDataModule
    dm = cls(
        root=root,
        image_size=112,
        cache=cache,
        cache_dir=cache_dir,
        decode_workers=2,
        num_workers=2,
        val_identities=4,
        test_identities=4,
        p=32,
        k=4,
        batches_per_epoch=batches + 1,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.batch_sampler.set_epoch(0)
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    t1, n = time.perf_counter(), 0
    for _ in range(batches):
        images, _, _ = next(it)
        n += len(images)
    rate = n / (time.perf_counter() - t1)
    return {"first_batch_s": round(first, 2), "img_per_s": round(rate, 1), "images": n}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree")
    ap.add_argument("--rec", required=True)
    ap.add_argument("--cache", required=True, help="a scratch folder for the indexes and decode caches (emptied)")
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--step", nargs=3, metavar=("SOURCE", "ROOT", "CACHE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.step:
        print(json.dumps(step(a.step[0], a.step[1], a.step[2] == "true", a.cache, a.batches)))
        return
    tree, rec = Path(a.tree), Path(a.rec)
    if not (rec / "train.rec").is_file():
        print("packed:", json.dumps(pack(tree, rec)))
    print(f"{(rec / 'train.rec').stat().st_size / 1e6:.0f} MB .rec")
    rows = []
    for cache in (False, True):
        for source, root in (("folder", tree), ("rec", rec)):
            scratch = Path(a.cache) / f"{source}-{cache}"
            shutil.rmtree(scratch, ignore_errors=True)
            for start in ("cold", "warm"):
                cmd = [sys.executable, __file__, a.tree, "--rec", a.rec, "--cache", str(scratch)]
                cmd += ["--batches", str(a.batches), "--step", source, str(root), str(cache).lower()]
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                if out.returncode:
                    sys.exit(out.stderr[-3000:])
                r = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append({"source": source, "cache": cache, "start": start, **r})
                print(json.dumps(rows[-1]), flush=True)
    print("\n| data | cache | start | time to first batch (s) | img/s after it | vs folder |")
    print("|---|---|---|---|---|---|")
    base = {(r["cache"], r["start"]): r["img_per_s"] for r in rows if r["source"] == "folder"}
    for r in rows:
        ratio = r["img_per_s"] / base[r["cache"], r["start"]]
        print(
            f"| {r['source']} | {str(r['cache']).lower()} | {r['start']} | {r['first_batch_s']} | {r['img_per_s']} | "
            f"{ratio:.2f}x |"
        )


if __name__ == "__main__":
    main()
