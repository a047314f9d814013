"""Cost of each ``augment=`` group: training-step time relative to ``augment=none``, same run.

    python benchmarks/bench_augment.py [--batch 128] [--size 64] [--steps 10] [--rounds 3]

Each step is what FaceNetModule.training_step does on a uint8 PK batch: augment (the conf/augment/<name>.yaml
ops, built as train.py builds them), normalise, embed with the default backbone, mine semi-hard triplets,
triplet loss, backward, AdamW step. The groups are interleaved within each round so machine drift hits all of
them; the ratio is of medians. Also reports the augmentation alone, as ms per batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, machine, table  # noqa: E402

from facenet_pl.training.module import FaceNetModule  # noqa: E402

GROUPS = ["none", "flip", "standard", "strong"]


def augment_cfg(name: str, size: int) -> dict:
    cfg = OmegaConf.merge(
        {"backbone": {"input_size": size}}, {"augment": OmegaConf.load(ROOT / "conf" / "augment" / f"{name}.yaml")}
    )
    return OmegaConf.to_container(cfg, resolve=True)["augment"]


def build(name: str, size: int) -> FaceNetModule:
    torch.manual_seed(0)
    return FaceNetModule(
        backbone={"name": "facenet_small", "input_size": size, "kwargs": {"widths": [16, 32, 64, 128]}},
        model={"embedding_dim": 128, "normalization": "fixed", "channels_last": True},
        augment=augment_cfg(name, size),
        miner={"_target_": "facenet_pl.mining.SemiHardMiner"},
        loss={"_target_": "facenet_pl.losses.TripletLoss", "margin": 0.2},
        optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3, "weight_decay": 5e-4},
    )


def step_seconds(module: FaceNetModule, images: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    module.train()
    times = []
    for i in range(steps + 1):  # the first step warms up
        t = time.perf_counter()
        emb = module(module._inputs(images, augment=True))
        loss, _ = module.criterion(emb, module.miner(emb, labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def augment_seconds(module: FaceNetModule, images: torch.Tensor, steps: int) -> float:
    if module.augment is None:
        return 0.0
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        module.augment(images)
        if i:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128, help="images per batch (P x K with K=4)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, generator=g)
    labels = torch.arange(args.batch // 4).repeat_interleave(4)
    step = {n: [] for n in GROUPS}
    aug = {n: [] for n in GROUPS}
    for r in range(args.rounds):
        for name in GROUPS:
            m = build(name, args.size)
            step[name].append(step_seconds(m, images, labels, args.steps))
            aug[name].append(augment_seconds(m, images, args.steps))
            print(
                f"round {r}: {name} step {1000 * step[name][-1]:.0f} ms, augment {1000 * aug[name][-1]:.0f} ms",
                file=sys.stderr,
            )
    base = statistics.median(step["none"])
    rows = [
        {
            "augment=": n,
            "augmentation alone, ms/batch": f"{1000 * statistics.median(aug[n]):.0f}",
            "training step, ratio to none": f"{statistics.median(step[n]) / base:.2f}",
        }
        for n in GROUPS
    ]
    print(
        f"machine: {machine()}; batch {args.batch} x {args.size} px uint8, facenet_small; "
        f"{args.rounds} rounds x {args.steps} steps, medians\n"
    )
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
