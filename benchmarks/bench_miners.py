"""Mining speed and peak memory of our miners vs pytorch-metric-learning (PML) on the same inputs.

    python benchmarks/bench_miners.py            # all sizes, prints a Markdown table
    python benchmarks/bench_miners.py --quick    # B=1024 and 1800 only

Every (miner, batch) runs in its own interpreter, so its peak RSS increase is its own. Times are
medians of repeated calls after a warm-up; ratios compare against PML measured in the same run.
Semantics differ: our SemiHardMiner returns one negative per anchor-positive pair (FaceNet / TF
``triplet_semihard_loss``); PML's TripletMarginMiner("semihard") returns every semi-hard triplet.
PML's semi-hard miner builds B x B x B tensors, so it is skipped where that cannot fit in memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median, run_isolated, table, timeit  # noqa: E402

SIZES = [(1024, 128, 8), (1800, 45, 40), (4096, 512, 8), (8192, 1024, 8)]
METHODS = ["ours_semihard", "pml_semihard", "ours_hardest", "ours_batch_hard", "pml_batch_hard"]
PML_CUBE_LIMIT = 2048  # PML semi-hard materialises B^3 masks: 69 GB of bool at B=4096


def make_miner(name: str):
    if name.startswith("ours_"):
        from facenet_pl.mining import BatchHardMiner, HardestMiner, SemiHardMiner

        return {"ours_semihard": SemiHardMiner, "ours_hardest": HardestMiner, "ours_batch_hard": BatchHardMiner}[name]()
    from pytorch_metric_learning import miners

    if name == "pml_semihard":
        return miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    return miners.BatchHardMiner()


def one(name: str, b: int, ids: int, k: int) -> dict:
    import torch

    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(b, 128), dim=1)
    labels = torch.arange(ids).repeat_interleave(k)
    miner = make_miner(name)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    first = timeit(lambda: miner(emb, labels), repeat=1, warmup=0)[0]
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    repeat = 5 if first < 0.5 else 3 if first < 3 else 1
    times = timeit(lambda: miner(emb, labels), repeat=repeat, warmup=0)
    n = len(miner(emb, labels)[0])
    return {"seconds": median(times), "peak_mb": peak_mb, "triplets": n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=4, metavar=("METHOD", "B", "IDS", "K"))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.one:
        m, b, ids, k = args.one
        print(json.dumps(one(m, int(b), int(ids), int(k))))
        return
    sizes = SIZES[:2] if args.quick else SIZES
    rows, checks = [], []
    for b, ids, k in sizes:
        res = {}
        for m in METHODS:
            if m == "pml_semihard" and b > PML_CUBE_LIMIT:
                res[m] = {"error": f"skipped: B^3 masks ({b**3 / 1e9:.0f} GB)"}
                continue
            res[m] = run_isolated(Path(__file__), [m, str(b), str(ids), str(k)])
            print(f"B={b} {m}: {res[m]}", file=sys.stderr, flush=True)
        base_sh, base_bh = res["pml_semihard"].get("seconds"), res["pml_batch_hard"].get("seconds")
        for m in METHODS:
            r = res[m]
            row = {"B (ids x K)": f"{b} ({ids} x {k})", "miner": m}
            if "error" in r:
                row["median ms"] = r["error"]
            else:
                ref = base_sh if "semihard" in m else base_bh
                row.update(
                    {
                        "median ms": f"{r['seconds'] * 1e3:.1f}",
                        "peak RSS +MB": f"{r['peak_mb']:.0f}",
                        "triplets": r["triplets"],
                        "speed-up vs PML": f"{ref / r['seconds']:.1f}x" if ref else "n/a",
                    }
                )
            rows.append(row)
        if base_sh and "seconds" in res["ours_semihard"]:
            need = 20 if b == 1024 else 5 if b == 1800 else None
            if need:
                got = base_sh / res["ours_semihard"]["seconds"]
                checks.append(
                    f"semi-hard B={b}: {got:.1f}x faster than PML (target >= {need}x): "
                    f"{'PASS' if got >= need else 'FAIL'}"
                )
        if base_bh:
            for m in ("ours_hardest", "ours_batch_hard"):
                if "seconds" in res[m]:
                    ratio = res[m]["seconds"] / base_bh
                    checks.append(
                        f"{m} B={b}: {ratio:.2f}x PML BatchHardMiner's time (target <= 1): "
                        f"{'PASS' if ratio <= 1 else 'FAIL'}"
                    )
    print(f"machine: {machine()}\n")
    print(table(rows, ["B (ids x K)", "miner", "median ms", "speed-up vs PML", "peak RSS +MB", "triplets"]))
    print("\n" + "\n".join(checks))


if __name__ == "__main__":
    main()
