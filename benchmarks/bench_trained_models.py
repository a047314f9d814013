"""LFW 10-fold verification of imported face models, and of dlib's own pipeline, on the same pairs.

``eval.py benchmark=bins`` is the pipeline's own table for a model file (it embeds a ``.bin``'s 12,000 images);
this script embeds each of the 7,701 distinct photos once, keeps the embeddings, and scores the pairs with the
same :func:`~facenet_pl.evaluation.evaluate_pairs` (the official folds, each threshold fit on the other 9) under
settings changed at test time (``--normalization``, ``--flip``), so a choice such as Sandberg's input
standardisation is decided on LFW. It also scores ``benchmarks/dlib_reference.py``'s output (dlib's descriptors,
its Euclidean distances) on the same folds.

    python benchmarks/bench_trained_models.py model --crops CROPS --pairs pairs.txt --model casia.safetensors \
        --normalization fixed prewhiten --flip
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


def _pair_files(pairs):
    """Each distinct photo of an LFW pairs file, and the indices of each pair's two photos in that list."""
    names = [f"{n}/{n}_{int(k):04d}" for n, k in zip(pairs.name1, pairs.num1)]
    names2 = [f"{n}/{n}_{int(k):04d}" for n, k in zip(pairs.name2, pairs.num2)]
    files = sorted(set(names) | set(names2))
    index = {f: i for i, f in enumerate(files)}
    return files, np.array([index[f] for f in names]), np.array([index[f] for f in names2])


def score_model(a) -> None:
    """Embed each distinct crop once (and its mirror image with --flip), under each --normalization, caching the
    embeddings in --cache; score every combination on the official folds."""
    from pathlib import Path

    import torch

    from facenet_pl.data.images import decode_images
    from facenet_pl.data.lfw import read_pairs
    from facenet_pl.evaluation import evaluate_pairs
    from facenet_pl.inference.embed import load_model

    torch.manual_seed(0)
    module = load_model(a.model)
    pairs = read_pairs(a.pairs)
    files, i1, i2 = _pair_files(pairs)
    paths = [Path(a.crops) / f"{f}.png" for f in files]
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    images = None
    for norm in a.normalization or [module.normalization]:
        module.normalization = norm
        embs = {}
        for flip in (False, True) if a.flip else (False,):
            f = cache / f"{Path(a.model).stem}-{norm}-{'flipped' if flip else 'plain'}.npy"
            t0 = time.perf_counter()
            if not f.exists():
                if images is None:
                    images, ok = decode_images(paths, module.input_size, num_workers=2)
                    assert ok.all(), [str(p) for p, k in zip(paths, ok) if not k][:3]
                x = torch.from_numpy(images)
                with torch.no_grad():
                    e = torch.cat([module(module_input(module, x[i : i + 64], flip)) for i in range(0, len(x), 64)])
                np.save(f, e.numpy())
            embs[flip] = np.load(f)
            print(f"{f.name}: {time.perf_counter() - t0:.0f} s", flush=True)
        variants = [("off", embs[False])]
        if a.flip:
            both = embs[False] + embs[True]
            variants.append(
                ("on (mean of the image's and its mirror's)", both / np.linalg.norm(both, axis=1, keepdims=True))
            )
        for flip_name, e in variants:
            d = ((e[i1].astype(np.float64) - e[i2]) ** 2).sum(1)
            res = evaluate_pairs(d, pairs.issame)
            res["pairs"] = len(d)
            _row(f"{Path(a.model).name} normalization={norm} flip={flip_name}", res, 0.0)
        if a.sandberg:
            plain = embs[False].astype(np.float64)
            rows = [("off", plain)] + ([("concatenated", np.concatenate([plain, embs[True]], 1))] if a.flip else [])
            for flip_name, e in rows:
                acc = sandberg_protocol(e, i1, i2, np.asarray(pairs.issame))
                name = f"{Path(a.model).name} normalization={norm} flip={flip_name}, validate_on_lfw scoring"
                print(
                    json.dumps(
                        {"name": name, "accuracy": round(100 * np.mean(acc), 2), "std": round(100 * np.std(acc), 2)}
                    )
                )


def sandberg_protocol(e: np.ndarray, i1: np.ndarray, i2: np.ndarray, same: np.ndarray) -> list[float]:
    """davidsandberg/facenet's ``validate_on_lfw --distance_metric 1 --subtract_mean``: per fold, the mean
    embedding of the other 9 folds' pairs is subtracted, the distance is the angle / pi, the threshold the most
    accurate on those 9 folds (here: the midpoint rule of :func:`best_threshold` instead of their 0.01 grid)."""
    from facenet_pl.evaluation import best_threshold

    accs = []
    for f in range(10):
        test = np.arange(len(same) // 10 * f, len(same) // 10 * (f + 1))
        train = np.setdiff1d(np.arange(len(same)), test)
        mean = np.concatenate([e[i1[train]], e[i2[train]]]).mean(0)
        x, y = e[i1] - mean, e[i2] - mean
        cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
        d = np.arccos(np.clip(cos, -1, 1)) / np.pi
        t, _ = best_threshold(d[train], same[train])
        accs.append(float(np.mean((d[test] < t) == same[test])))
    return accs


def module_input(module, images, flip: bool):
    from facenet_pl.models.normalization import normalize_images

    x = normalize_images(images, module.normalization)
    return x.flip(-1) if flip else x


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
    p.add_argument("--crops", required=True, help="the pairs' photos aligned as the model expects (facenet-pl align)")
    p.add_argument("--pairs", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--normalization", nargs="+", help="override the model file's, e.g. fixed prewhiten")
    p.add_argument("--flip", action="store_true", help="also score flip averaging")
    p.add_argument("--cache", default="trained_model_embeddings", help="folder for the embeddings")
    p.add_argument("--sandberg", action="store_true", help="also davidsandberg's validate_on_lfw scoring")
    p.set_defaults(fn=score_model)
    p = sub.add_parser("dlib-reference")
    p.add_argument("--npz", required=True)
    p.add_argument("--pairs", required=True)
    p.set_defaults(fn=score_dlib)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
