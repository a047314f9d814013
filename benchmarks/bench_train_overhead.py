"""Training-step overhead: images/s of the Lightning loop train.py runs vs a plain PyTorch loop.

    python benchmarks/bench_train_overhead.py [--steps 30] [--rounds 3]

Both loops train the same FaceNetModule (backbone, miner, triplet loss, AdamW) on the same
in-memory synthetic data with the same PK batches; the Lightning one also has the PK sampler's
DataLoader, logging (CSV), checkpoint callback, LR monitor and progress bar, as in train.py.
Rounds alternate plain / Lightning so machine drift hits both; the ratio is of medians.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pytorch_lightning as pl  # noqa: E402
from _common import machine, table  # noqa: E402
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar  # noqa: E402
from pytorch_lightning.loggers import CSVLogger  # noqa: E402

from facenet_pl.data import SyntheticFaceDataModule  # noqa: E402
from facenet_pl.training.module import FaceNetModule  # noqa: E402

BACKBONES = {
    "facenet_small (default)": {"name": "facenet_small", "input_size": 64, "kwargs": {"widths": [16, 32, 64, 128]}},
    "resnet18": {"name": "resnet18", "input_size": 64, "kwargs": {}},
}


def build(backbone: dict) -> FaceNetModule:
    torch.manual_seed(0)
    return FaceNetModule(
        backbone=backbone,
        model={"embedding_dim": 128, "normalization": "fixed", "channels_last": True},
        augment={"ops": {"flip": {"_target_": "kornia.augmentation.RandomHorizontalFlip", "p": 0.5}}},
        miner={"_target_": "facenet_pl.mining.SemiHardMiner"},
        loss={"_target_": "facenet_pl.losses.TripletLoss", "margin": 0.2},
        optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3, "weight_decay": 5e-4},
        scheduler={"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": "total_steps", "warmup_steps": 5},
    )


def data(size: int) -> SyntheticFaceDataModule:
    dm = SyntheticFaceDataModule(
        image_size=size,
        train_identities=640,
        train_images_per_identity=8,
        val_identities=20,
        val_images_per_identity=2,
        val_pairs_per_fold=2,
        p=32,
        k=8,
    )
    dm.setup("fit")
    dm.train_set.__getitems__(range(len(dm.train_set)))  # render every image now: neither loop pays for drawing
    return dm


def plain_loop(module: FaceNetModule, dm: SyntheticFaceDataModule, warmup: int, steps: int) -> float:
    """images/s over ``steps`` steps of a hand-written loop on pre-drawn PK batches."""
    batches = list(iter(dm.train_dataloader().batch_sampler))[: warmup + steps]
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=5e-4)
    module.train()
    n_img = 0
    for i, idx in enumerate(batches):
        if i == warmup:
            t0, n_img = time.perf_counter(), 0
        images, y, _ = dm.train_set.__getitems__(idx)  # the rendered images, kept by the dataset
        x = module._inputs(images, augment=True)
        emb = module(x)
        loss, _ = module.criterion(emb, module.miner(emb, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n_img += len(y)
    return n_img / (time.perf_counter() - t0)


class _Clock(Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.t1, self.n = warmup, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.t0 is None:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.t0 is not None:
            self.n += len(batch[0])
            self.t1 = time.perf_counter()


def lightning_loop(module: FaceNetModule, dm: SyntheticFaceDataModule, warmup: int, steps: int) -> float:
    clock = _Clock(warmup)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=warmup + steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            log_every_n_steps=10,
            logger=CSVLogger(tmp, name="csv"),
            callbacks=[
                clock,
                ModelCheckpoint(dirpath=tmp, save_last=True),
                LearningRateMonitor("step"),
                TQDMProgressBar(refresh_rate=10),
            ],
            enable_model_summary=False,
            default_root_dir=tmp,
        )
        with contextlib.redirect_stdout(sys.stderr):  # the progress bar writes to stdout; keep the table clean
            trainer.fit(module, datamodule=dm)
    return clock.n / (clock.t1 - clock.t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for label, bb in BACKBONES.items():
        dm = data(bb["input_size"])
        plain, light = [], []
        for _ in range(args.rounds):
            plain.append(plain_loop(build(bb), dm, args.warmup, args.steps))
            light.append(lightning_loop(build(bb), dm, args.warmup, args.steps))
            print(f"{label}: plain {plain[-1]:.0f} img/s, lightning {light[-1]:.0f} img/s", file=sys.stderr)
        p, lt = statistics.median(plain), statistics.median(light)
        rows.append(
            {
                "backbone (64 px, batch 32 x 8)": label,
                "plain img/s": f"{p:.0f}",
                "train.py loop img/s": f"{lt:.0f}",
                "ratio": f"{lt / p:.3f}",
                "target >= 0.90": "PASS" if lt / p >= 0.9 else "FAIL",
            }
        )
    print(f"machine: {machine()}; {args.rounds} rounds x {args.steps} steps after {args.warmup} warm-up steps\n")
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
