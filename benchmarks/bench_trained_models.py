"""LFW 10-fold verification of imported face models, and of dlib's own pipeline, on the same pairs.

``eval.py benchmark=bins`` is the pipeline's own table for a model file; this script scores the same ``.bin`` with
the same code (:func:`~facenet_pl.evaluation.score_split` on :func:`~facenet_pl.inference.embed_dataset`) but lets
one setting change at test time (``--normalization``, ``--flip``), so a choice such as Sandberg's input
standardisation is decided on LFW, and scores ``benchmarks/dlib_reference.py``'s output (dlib's descriptors, its
Euclidean distances) on the official folds.

    python benchmarks/bench_trained_models.py model --bin BINS/lfw.bin --model casia.safetensors [--normalization N]
    python benchmarks/bench_trained_models.py dlib-reference --npz dlib_lfw.npz --pairs pairs.txt
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _row(name: str, res: dict, seconds: float) -> dict:
    row = {
        "name": name,
        "accuracy": round(100 * res["accuracy"], 2),
        "std": round(100 * res["accuracy_std"], 2),
        "auc": round(res["auc"], 5),
        "val@far1e-3": round(100 * res["val"], 2),
        "threshold": round(res["threshold"], 4),
        "pairs": int(res.get("pairs", 0)),
        "seconds": round(seconds, 1),
    }
    print(json.dumps(row))
    return row


def score_model(a) -> None:
    import torch

    from facenet_pl.data.binsets import bin_verification_set
    from facenet_pl.evaluation import score_split
    from facenet_pl.inference import embed_dataset, load_model

    torch.manual_seed(0)
    module = load_model(a.model)
    if a.normalization:
        module.normalization = a.normalization
    t0 = time.perf_counter()
    split = bin_verification_set(a.bin, module.input_size)
    emb = embed_dataset(module, split.dataset, 128, flip=a.flip)
    res = score_split(split, split.distances(emb))
    _row(f"{a.model} normalization={module.normalization} flip={a.flip}", res, time.perf_counter() - t0)


def score_dlib(a) -> None:
    from facenet_pl.data.lfw import read_pairs
    from facenet_pl.evaluation import evaluate_pairs

    ref = np.load(a.npz)
    index = {f: i for i, f in enumerate(ref["files"].tolist())}
    pairs = read_pairs(a.pairs)
    i1 = [index[f"{n}/{n}_{int(k):04d}.jpg"] for n, k in zip(pairs.name1, pairs.num1)]
    i2 = [index[f"{n}/{n}_{int(k):04d}.jpg"] for n, k in zip(pairs.name2, pairs.num2)]
    d = ref["descriptors"].astype(np.float64)
    dist = ((d[i1] - d[i2]) ** 2).sum(1)  # dlib's rule is Euclidean < 0.6: the same order as squared
    res = evaluate_pairs(dist, pairs.issame)
    res["pairs"] = len(dist)
    found = ref["found"]
    print(f"HOG found the face in {found.sum()} of {len(found)} photos; the rest used LFW's centre box")
    _row("dlib's own pipeline (HOG, shape_predictor_5, get_face_chip 150/0.25)", res, 0.0)
    print(f"accuracy at dlib's own threshold (Euclidean 0.6): {100 * np.mean((dist < 0.36) == pairs.issame):.2f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("model")
    p.add_argument("--bin", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--normalization", help="override the model file's (e.g. prewhiten)")
    p.add_argument("--flip", action="store_true")
    p.set_defaults(fn=score_model)
    p = sub.add_parser("dlib-reference")
    p.add_argument("--npz", required=True)
    p.add_argument("--pairs", required=True)
    p.set_defaults(fn=score_dlib)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
