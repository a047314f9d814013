"""How long a config mistake takes to reach the user: wall time from ``python train.py <mistake>`` to its exit, for
the mistakes of issue 41, beside Hydra's own error (an unknown option) and a bare interpreter in the same run.

The checks that need no torch run before train.py imports it (torch ~2.5 s, facenet_pl.run.fit ~9 s on 2 cores),
so the line should arrive in about a second; the goal is <= 2 s on 2 cores. The mistakes that need the data or the
data module's class (a key the chosen data does not take, a validation cut short) come after those imports.

    python benchmarks/bench_error_latency.py              # 5 runs of each, median and max
    python benchmarks/bench_error_latency.py --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (what, train.py arguments, a piece of the line that must come back)
MISTAKES = [
    ("(reference) bare interpreter, `python -c pass`", None, None),
    ("(reference) Hydra's own: an unknown option, `miner=semi_hard`", ["miner=semi_hard"], "semi_hard"),
    ("`seed=???`", ["seed=???"], "seed has no value"),
    ("`trainer.max_epochs=abc`", ["trainer.max_epochs=abc"], "trainer.max_epochs must be an integer"),
    ("`optimizer.lr=-1`", ["optimizer.lr=-1"], "optimizer.lr must be >= 0"),
    ("`data.p=10000` (built-in data)", ["data.p=10000"], "data.p=10000 identities per batch"),
    ("`data=folder` without `data.root`", ["data=folder"], "data.root has no value"),
    ("`data.k=1`", ["data.k=1"], "data.k (images per identity) must be >= 2"),
    ("`experiment=losses data=lfw` (needs the data class)", ["experiment=losses", "data=lfw"], "is not a setting"),
]


def one(args: list[str] | None, expect: str | None, run_dir: Path) -> float:
    cmd = [sys.executable, "-c", "pass"] if args is None else [sys.executable, "train.py", *args]
    if args is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - t
    if expect is not None and (r.returncode == 0 or expect not in r.stderr):
        raise SystemExit(f"{' '.join(args or [])}: expected an error with {expect!r}, got:\n{r.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (what, args, expect) in enumerate(MISTAKES):
            times = [one(args, expect, Path(tmp) / f"{i}_{r}") for r in range(a.repeat)]
            rows.append(f"| {what} | {statistics.median(times):.2f} | {max(times):.2f} |")
            print(rows[-1], flush=True)
    print(
        f"\n{os.cpu_count()} cores, load {load:.2f} at the start, {a.repeat} runs each, Python "
        f"{sys.version.split()[0]}\n\n| mistake | median s to the error line | max s |\n|---|---|---|\n"
        + "\n".join(rows)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
