"""``model.compile`` on this machine: compile time and training-step time against the uncompiled network.

    python benchmarks/bench_compile.py [--backbone facenet_small] [--size 64] [--p 32 --k 8] [--steps 20]

The training step of train.py (FaceNetModule: inputs, network, semi-hard miner, triplet loss, backward, AdamW) on
one fixed PK batch, for ``model.compile`` false / true (inductor) / eager, each in a fresh process: the first
step's seconds (tracing and, for inductor, code generation and the C++ build) and the median of ``--steps`` later
steps. The uncompiled network is the baseline of the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one(backbone: str, size: int, p: int, k: int, steps: int, compile_setting) -> dict:
    import torch

    from facenet_pl.training.module import FaceNetModule

    torch.manual_seed(0)
    kwargs = {"widths": [16, 32, 64, 128]} if backbone == "facenet_small" else {}
    module = FaceNetModule(
        backbone={"name": backbone, "input_size": size, "kwargs": kwargs},
        model={"embedding_dim": 128, "normalization": "fixed", "channels_last": True, "compile": compile_setting},
        augment={"ops": {}},
        miner={"_target_": "facenet_pl.mining.SemiHardMiner"},
        loss={"_target_": "facenet_pl.losses.TripletLoss", "margin": 0.2},
        optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3},
        scheduler=None,
    )
    images = torch.randint(0, 256, (p * k, 3, size, size), dtype=torch.uint8)
    labels = torch.arange(p).repeat_interleave(k)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)

    def step():
        emb = module(module._inputs(images, augment=False))
        loss, _ = module.criterion(emb, module.miner(emb, labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = time.perf_counter()
    step()
    first = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"first_step_s": first, "step_ms": 1000 * sorted(times)[len(times) // 2]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="facenet_small")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--p", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one is not None:
        setting = {"false": False, "true": True}.get(a.one, a.one)
        print(json.dumps(one(a.backbone, a.size, a.p, a.k, a.steps, setting)))
        return
    rows = []
    for setting in ("false", "true", "eager"):
        cmd = [sys.executable, __file__, "--one", setting, "--backbone", a.backbone, "--size", str(a.size)]
        cmd += ["--p", str(a.p), "--k", str(a.k), "--steps", str(a.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            sys.exit(out.stderr[-3000:])
        rows.append((setting, json.loads(out.stdout.strip().splitlines()[-1])))
        print(setting, rows[-1][1], file=sys.stderr, flush=True)
    base = rows[0][1]["step_ms"]
    print(f"\n{a.backbone} at {a.size} px, batch {a.p} x {a.k}, {a.steps} steps after the first\n")
    print("| model.compile | first step s | step ms | step vs uncompiled |")
    print("|---|---|---|---|")
    for setting, r in rows:
        print(f"| {setting} | {r['first_step_s']:.1f} | {r['step_ms']:.0f} | {r['step_ms'] / base:.2f}x |")


if __name__ == "__main__":
    main()
