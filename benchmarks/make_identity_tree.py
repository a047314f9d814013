"""Write a large identity-folder tree of real JPEG files (``OUT/<identity>/<n>.jpg``) from the built-in renderer.

    python benchmarks/make_identity_tree.py /tmp/faces_200k --identities 10000 --per-identity 20
    python benchmarks/make_identity_tree.py /tmp/faces_20k --identities 1000 --per-identity 20 --workers 2

For measuring what ``data=folder`` costs at CASIA-WebFace / VGGFace2 scale (scan, cache, decode) without
downloading either. Faces are rendered at ``--render-size`` and each file is resized to a side drawn from
``--min-size``..``--max-size`` (like scraped crops of varying resolution) and saved as JPEG ``--quality``.
Identities are split across ``--workers`` processes; rerunning skips identities whose folder is complete, so
an interrupted run continues. Write it outside the repository (it is test data, not project data).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_identities(out: str, ids: list[int], per: int, args: dict) -> int:
    """Render and save the images of ``ids``; returns how many files were written."""
    import torch
    from PIL import Image

    from facenet_pl.data.synthetic import SyntheticFaceConfig, SyntheticFaceDataset

    torch.set_num_threads(1)
    cfg = SyntheticFaceConfig(image_size=args["render_size"])
    ds = SyntheticFaceDataset(max(ids) + 1, per, args["seed"], "train", cfg, keep=False)
    rng = np.random.default_rng([args["seed"], ids[0]])
    written = 0
    for start in range(0, len(ids), 16):
        todo = [i for i in ids[start : start + 16] if not _complete(Path(out) / f"id{i:06d}", per)]
        if not todo:
            continue
        idx = torch.tensor([i * per + j for i in todo for j in range(per)])
        images = ds.render(idx).permute(0, 2, 3, 1).numpy()
        sizes = rng.integers(args["min_size"], args["max_size"] + 1, len(idx))
        for n, (img, size) in enumerate(zip(images, sizes, strict=True)):
            folder = Path(out) / f"id{todo[n // per]:06d}"
            folder.mkdir(parents=True, exist_ok=True)
            pil = Image.fromarray(img)
            if size != img.shape[0]:
                pil = pil.resize((int(size), int(size)), Image.BILINEAR)
            tmp = folder / f".{n % per:04d}.jpg.tmp"
            pil.save(tmp, format="JPEG", quality=args["quality"])
            os.replace(tmp, folder / f"{n % per:04d}.jpg")  # a killed run never leaves a half-written JPEG
            written += 1
    return written


def _complete(folder: Path, per: int) -> bool:
    return folder.is_dir() and sum(1 for p in folder.iterdir() if p.suffix == ".jpg") >= per


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--identities", type=int, default=10_000)
    ap.add_argument("--per-identity", type=int, default=20)
    ap.add_argument("--render-size", type=int, default=112)
    ap.add_argument("--min-size", type=int, default=112)
    ap.add_argument("--max-size", type=int, default=250)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    args = {k: getattr(a, k) for k in ("render_size", "min_size", "max_size", "quality", "seed")}
    ids = list(range(a.identities))
    shards = [ids[w :: a.workers] for w in range(a.workers)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers) as pool:
        written = sum(pool.map(write_identities, [str(out)] * a.workers, shards, [a.per_identity] * a.workers,
                               [args] * a.workers))  # fmt: skip
    dt = time.perf_counter() - t0
    total = a.identities * a.per_identity
    print(f"{out}: {total:,} images of {a.identities:,} identities ({written:,} written now) in {dt:.0f} s")


if __name__ == "__main__":
    main()
