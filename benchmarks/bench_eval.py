"""Evaluation speed: 10-fold LFW metrics on 6,000 pairs, and embedding throughput over LFW's 13,233 images.

    python benchmarks/bench_eval.py [--lfw-root ../shared/data/lfw] [--ckpt path.ckpt]

Without ``--lfw-root`` the embedding part uses 13,233 synthetic images of the same size instead
(and says so). Without ``--ckpt`` a freshly initialised default model is used (speed only).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import machine, median, table, timeit  # noqa: E402

from facenet_pl.data.datasets import InMemoryFaceDataset  # noqa: E402
from facenet_pl.evaluation import evaluate_pairs, kfold_accuracy  # noqa: E402
from facenet_pl.inference.embed import embed_dataset, load_model  # noqa: E402


def default_model():
    from facenet_pl.training.module import FaceNetModule

    return FaceNetModule(
        backbone={"name": "facenet_small", "input_size": 64, "kwargs": {"widths": [16, 32, 64, 128]}},
        model={"embedding_dim": 128, "channels_last": True},
        miner={"_target_": "facenet_pl.mining.SemiHardMiner"},
        loss={"_target_": "facenet_pl.losses.TripletLoss"},
        optimizer={"_target_": "torch.optim.AdamW"},
    ).eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw-root")
    ap.add_argument("--ckpt")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    s = np.tile(np.r_[np.ones(300, bool), np.zeros(300, bool)], 10)
    d = np.where(s, rng.normal(0.8, 0.3, 6000), rng.normal(1.4, 0.3, 6000))
    evaluate_pairs(d, s)  # imports (sklearn) outside the timing
    t_acc = median(timeit(lambda: kfold_accuracy(d, s), repeat=5))
    t_all = median(timeit(lambda: evaluate_pairs(d, s), repeat=5))
    rows = [
        {
            "what": "10-fold accuracy, 6,000 pairs",
            "result": f"{t_acc * 1e3:.1f} ms",
            "target": "< 1 s",
            "status": "PASS" if t_acc < 1 else "FAIL",
        },
        {
            "what": "full table (acc, VAL@FAR, AUC, EER), 6,000 pairs",
            "result": f"{t_all * 1e3:.1f} ms",
            "target": "< 1 s",
            "status": "PASS" if t_all < 1 else "FAIL",
        },
    ]
    module = load_model(args.ckpt) if args.ckpt else default_model()
    size = module.input_size
    if args.lfw_root:
        from facenet_pl.data.decode_cache import cached_decode
        from facenet_pl.data.images import scan_identity_folders
        from facenet_pl.data.lfw import find_image_root

        paths, labels, _ = scan_identity_folders(find_image_root(args.lfw_root))
        cache = tempfile.mkdtemp(prefix="bench_eval_")  # a fresh cache: time the real decode
        t = time.perf_counter()
        images, ok = cached_decode(paths, size, 120, cache, num_workers=2)
        t_dec = time.perf_counter() - t
        images, labels = images[ok], np.asarray(labels)[ok]  # a copy in memory: the cache can go
        shutil.rmtree(cache, ignore_errors=True)
        rows.append(
            {
                "what": f"decode + crop + resize {len(paths):,} LFW JPEGs (2 workers, into the uint8 cache)",
                "result": f"{len(paths) / t_dec:.0f} img/s ({t_dec:.1f} s)",
                "target": "",
                "status": "",
            }
        )
        source = ""
    else:
        from facenet_pl.data.synthetic import SyntheticFaceConfig, generate_split

        images, labels = generate_split(1323, 10, 0, "val", SyntheticFaceConfig(image_size=size))
        images, labels = images[:13233].numpy(), labels[:13233].numpy()
        source = "synthetic stand-in for "
    ds = InMemoryFaceDataset(images, labels)
    for flip in (False, True):
        t = time.perf_counter()
        emb = embed_dataset(module, ds, batch_size=512, flip=flip)
        dt = time.perf_counter() - t
        rows.append(
            {
                "what": f"embed {len(emb):,} {source}LFW images at {size} px{' + flip' if flip else ''}",
                "result": f"{len(emb) / dt:.0f} img/s ({dt:.1f} s)",
                "target": "",
                "status": "",
            }
        )
    print(f"machine: {machine()}\n")
    print(table(rows, ["what", "result", "target", "status"]))


if __name__ == "__main__":
    main()
