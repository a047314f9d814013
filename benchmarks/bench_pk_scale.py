"""PK batch-index generation at the scale of CASIA-WebFace / VGGFace2 folders: is the sampler ever the bottleneck?

    python benchmarks/bench_pk_scale.py              # 20 k / 200 k / 500 k images
    python benchmarks/bench_pk_scale.py --quick      # 20 k and 200 k only

For each size, image counts per identity are drawn from a skewed distribution (most people have few images,
some many, like scraped identity folders). ``PKSampler`` (per-identity index arrays, one vectorised draw per
epoch) is compared with a straightforward Python sampler measured in the same run (a dict of per-identity
lists, ``random.sample`` per batch), the way many training scripts build P x K batches. Reported: building
the sampler, one whole epoch of batch indices, and milliseconds per batch.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import machine, table  # noqa: E402

from facenet_pl.data.samplers import PKSampler  # noqa: E402

SIZES = [(20_000, 1_000), (200_000, 10_000), (500_000, 10_575)]  # (images, identities); last: CASIA-WebFace


def skewed_labels(n_images: int, n_ids: int, seed: int = 0) -> np.ndarray:
    """Labels of ``n_images`` over ``n_ids`` identities, each with >= 2 images, counts log-normally skewed."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.0, n_ids)
    counts = 2 + np.floor(weights / weights.sum() * (n_images - 2 * n_ids)).astype(int)
    counts[: n_images - counts.sum()] += 1
    return rng.permutation(np.repeat(np.arange(n_ids), counts))


class PythonPKSampler:
    """The baseline: per-identity Python lists, ``random.sample`` for P identities and K images per batch."""

    def __init__(self, labels: np.ndarray, p: int, k: int, seed: int = 0) -> None:
        self.by_id: dict[int, list[int]] = {}
        for i, lab in enumerate(labels.tolist()):
            self.by_id.setdefault(lab, []).append(i)
        self.ids = [i for i, v in self.by_id.items() if len(v) >= 2]
        self.p, self.k, self.rng = p, k, random.Random(seed)
        self.batches = len(self.ids) // p

    def __iter__(self):
        for _ in range(self.batches):
            batch = []
            for ident in self.rng.sample(self.ids, self.p):
                imgs = self.by_id[ident]
                batch += self.rng.sample(imgs, self.k) if len(imgs) >= self.k else self.rng.choices(imgs, k=self.k)
            yield batch


def measure(n_images: int, n_ids: int, p: int, k: int, extra: int) -> list[dict]:
    labels = skewed_labels(n_images, n_ids)
    rows = []
    for name in ("PKSampler", "python baseline"):
        t0 = time.perf_counter()
        if name == "PKSampler":
            sampler = PKSampler(labels, p=p, k=k, extra_negatives=extra, seed=0)
            sampler.set_epoch(1)
        else:
            sampler = PythonPKSampler(labels, p=p, k=k)
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        batches = list(sampler)
        epoch = time.perf_counter() - t0
        rows.append(
            {
                "images": f"{n_images:,}",
                "identities": f"{n_ids:,}",
                "sampler": name,
                "build s": f"{built:.3f}",
                "batches/epoch": len(batches),
                "epoch s": f"{epoch:.3f}",
                "ms per batch": epoch / len(batches) * 1e3,
                "batch size": len(batches[0]),
            }
        )
    base = rows[1]["ms per batch"]
    for r in rows:
        r["speed-up vs baseline"] = f"{base / r['ms per batch']:.1f}x"
        r["ms per batch"] = f"{r['ms per batch']:.3f}"
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--p", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--extra-negatives", type=int, default=0)
    a = ap.parse_args()
    rows = []
    for n, ids in SIZES[:2] if a.quick else SIZES:
        rows += measure(n, ids, a.p, a.k, a.extra_negatives)
    print(machine())
    print(f"P={a.p} x K={a.k}, extra_negatives={a.extra_negatives}\n")
    cols = ["images", "identities", "sampler", "build s", "batches/epoch", "epoch s", "ms per batch"]
    print(table(rows, [*cols, "speed-up vs baseline", "batch size"]))


if __name__ == "__main__":
    main()
