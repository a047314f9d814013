"""Does the input pipeline starve training? Decode JPEGs vs memory-mapped uint8 cache vs the model step.

    python benchmarks/bench_input_pipeline.py [--lfw-root ../shared/data/lfw] [--n 2000]

Measures images/s of (1) decoding + centre-cropping + resizing LFW-size JPEGs with 0 and 2
worker processes, (2) the PK-sampled DataLoader over the decoded, memory-mapped cache (the
DataModule alone), and (3) one training step of the model (forward, mining, loss, backward, AdamW).
Without ``--lfw-root`` it writes ``--n`` 250 x 250 synthetic JPEGs to a temporary folder instead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import machine, table  # noqa: E402

from facenet_pl.data.datasets import InMemoryFaceDataset, collate_batch  # noqa: E402
from facenet_pl.data.decode_cache import cached_decode  # noqa: E402
from facenet_pl.data.images import decode_images, scan_identity_folders  # noqa: E402
from facenet_pl.data.samplers import PKSampler  # noqa: E402


def jpeg_files(args, tmp: Path) -> tuple[list[Path], np.ndarray, str]:
    if args.lfw_root:
        from facenet_pl.data.lfw import find_image_root

        paths, labels, _ = scan_identity_folders(find_image_root(args.lfw_root))
        return paths[: args.n], labels[: args.n], "LFW deep-funneled JPEGs"
    from PIL import Image

    from facenet_pl.data.synthetic import SyntheticFaceConfig, generate_split

    imgs, labels = generate_split(args.n // 10, 10, 0, "train", SyntheticFaceConfig(image_size=250))
    paths = []
    for i, (img, lab) in enumerate(zip(imgs.numpy(), labels.numpy())):
        d = tmp / f"id{lab:05d}"
        d.mkdir(exist_ok=True)
        paths.append(d / f"{i}.jpg")
        Image.fromarray(img.transpose(1, 2, 0)).save(paths[-1], quality=90)
    return paths, labels.numpy(), "synthetic 250 x 250 JPEGs"


def step_rate(backbone: str, size: int, widths=None, steps: int = 6) -> float:
    from facenet_pl.training.module import FaceNetModule

    m = FaceNetModule(
        backbone={"name": backbone, "input_size": size, "kwargs": {"widths": widths} if widths else {}},
        model={"embedding_dim": 128, "channels_last": True},
        miner={"_target_": "facenet_pl.mining.SemiHardMiner"},
        loss={"_target_": "facenet_pl.losses.TripletLoss"},
        optimizer={"_target_": "torch.optim.AdamW"},
    )
    opt = torch.optim.AdamW(m.parameters())
    x = torch.randint(0, 255, (256, 3, size, size), dtype=torch.uint8)
    y = torch.arange(32).repeat_interleave(8)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        emb = m(m._inputs(x, augment=True))
        loss, _ = m.criterion(emb, m.miner(emb, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return 256 / float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw-root")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths, labels, what = jpeg_files(args, Path(tmp))
        for workers in (0, 2):
            t = time.perf_counter()
            decode_images(paths, args.size, crop=120, num_workers=workers)
            rate = len(paths) / (time.perf_counter() - t)
            rows.append(
                {"stage": f"decode + crop + resize, {len(paths)} {what}, {workers} workers", "img/s": f"{rate:.0f}"}
            )
        cached_decode(paths, args.size, 120, Path(tmp) / "cache", num_workers=2)
        images, ok = cached_decode(paths, args.size, 120, Path(tmp) / "cache")  # memory-mapped hit
        ds = InMemoryFaceDataset(images, labels)
        sampler = PKSampler(labels, p=8, k=4, few_images="replace", batches_per_epoch=200)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate_batch)
        t, n = time.perf_counter(), 0
        for x, _, _ in loader:
            n += len(x)
        rows.append(
            {
                "stage": f"PK DataLoader over the memory-mapped uint8 cache ({args.size} px)",
                "img/s": f"{n / (time.perf_counter() - t):.0f}",
            }
        )
    for name, size, widths in (
        ("facenet_small", 64, [16, 32, 64, 128]),
        ("resnet18", 64, None),
        ("resnet18", 112, None),
    ):
        rows.append(
            {
                "stage": f"training step, {name} at {size} px, batch 32 x 8",
                "img/s": f"{step_rate(name, size, widths):.0f}",
            }
        )
    print(f"machine: {machine()}\n")
    print(table(rows, ["stage", "img/s"]))


if __name__ == "__main__":
    main()
