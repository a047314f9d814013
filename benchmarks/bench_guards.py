"""What the divergence guard costs per training step: the per-tensor check it replaced against the fused one.

    python benchmarks/bench_guards.py [--backbone inception_v3] [--repeat 50]

*before* (until 2026-11-30): after every optimiser step, one ``abs().amax()`` per weight and floating buffer,
stacked, compared, and read on the host (``bool(bad.any())``: a device sync every step). *after*
(``facenet_pl.training.guards.TrainingGuards.note_tensors``): the comparison kept on the device (on CUDA one fused
``torch._foreach_norm(inf)`` over all tensors; on a CPU one ``abs().amax()`` per tensor, faster there); the host
reads it every ``model.guard_every_n_steps`` steps (the read's cost is shown apart). ``--device cuda`` measures
the GPU path (``benchmarks/gpu_check.py`` runs it). Counted: aten ops launched per step (each is a kernel launch
on a GPU), through a ``TorchDispatchMode``; timed: ms per step (device work included), median of ``--repeat``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class OpCount(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def before(named, limit: float) -> bool:
    """The guard as it was: one max-abs per tensor, then a host read."""
    items = [t.detach() for n, t in named if t.is_floating_point() and t.numel() and not n.endswith("threshold")]
    worst = torch.stack([t.abs().amax().float() for t in items])
    bad = ~torch.isfinite(worst) | (worst > limit)
    return bool(bad.any())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="inception_v3")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from facenet_pl.models.embedding import FaceNetEmbedding
    from facenet_pl.training.guards import MAX_ABS_WEIGHT, TrainingGuards, guarded_tensors

    device = torch.device(a.device)
    net = FaceNetEmbedding(a.backbone, embedding_dim=128, pretrained=False).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def named():
        return itertools.chain(net.named_parameters(), net.named_buffers())

    n_tensors = len(guarded_tensors(named()))
    guards = TrainingGuards(device, MAX_ABS_WEIGHT)
    cases = {
        "before: per-tensor max + host read": lambda: before(named(), MAX_ABS_WEIGHT),
        "after: recorded on the device, no read": lambda: guards.note_tensors(named(), 1),
        "after: the host read (every N steps)": guards.read,
    }
    rows = []
    for name, fn in cases.items():
        with OpCount() as c:
            fn()
        for _ in range(3):
            fn()
        times = []
        for _ in range(a.repeat):
            sync()
            t = time.perf_counter()
            fn()
            sync()  # the device's time too: what the step would wait for
            times.append(time.perf_counter() - t)
        times.sort()
        rows.append((name, c.ops, 1000 * times[len(times) // 2]))
    about = f"{n_tensors} weights and floating buffers, torch {torch.__version__}, {a.threads} thread(s)"
    print(f"{a.backbone} on {device}: {about}\n")
    print("| guard | aten ops per step | ms per step | vs before |")
    print("|---|---|---|---|")
    for name, ops, ms in rows:
        print(f"| {name} | {ops} | {ms:.2f} | {ms / rows[0][2]:.2f}x |")


if __name__ == "__main__":
    main()
