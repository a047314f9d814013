"""``evaluate(cfg)``: the full verification table (plus k-NN and clustering) of a checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from facenet_pl.evaluation import clustering_scores, evaluate_pairs, knn_topk_accuracy, split_gallery_probe
from facenet_pl.evaluation.plots import log_images, save_distance_histogram, save_roc
from facenet_pl.inference import embed_dataset, load_model

log = logging.getLogger(__name__)


def format_table(res: dict[str, Any]) -> str:
    rows = [
        ("accuracy", f"{res['accuracy']:.4f} +- {res['accuracy_std']:.4f}"),
        (f"VAL @ FAR={res['far_target']:g}", f"{res['val']:.4f} +- {res['val_std']:.4f} (FAR {res['far']:.5f})"),
        ("AUC", f"{res['auc']:.4f}"),
        ("EER", f"{res['eer']:.4f}"),
        ("threshold (mean of folds)", f"{res['threshold']:.4f}"),
        ("pairs", f"{res['pairs']}"),
    ]
    rows += [(k, f"{v:.4f}") for k, v in res.items() if k.startswith(("knn/", "kmeans/", "agglomerative/"))]
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    torch.manual_seed(cfg.get("seed", 0))
    module = load_model(cfg.ckpt_path)
    with open_dict(cfg):
        if cfg.data.get("image_size") is None:
            cfg.data.image_size = module.input_size
    dm = instantiate(cfg.data)
    dm.setup("validate")
    emb = embed_dataset(module, dm.val_set, cfg.get("batch_size", 256), flip=cfg.get("flip", True))
    pairs = torch.as_tensor(dm.val_pairs)
    d = (emb[pairs[:, 0]] - emb[pairs[:, 1]]).pow(2).sum(1).numpy()
    folds = getattr(dm, "val_pair_folds", None)
    test_folds = getattr(dm, "val_test_folds", None)
    res: dict[str, Any] = evaluate_pairs(d, dm.val_issame, far_target=cfg.far_target, folds=folds,
                                         test_folds=test_folds)
    res.update(far_target=cfg.far_target, pairs=int(len(d)), ckpt_path=str(cfg.ckpt_path), flip=bool(cfg.flip))
    labels = dm.val_set.labels.numpy()
    if cfg.get("knn", True):
        g, p = split_gallery_probe(labels, 1, cfg.get("seed", 0))
        if len(p):
            res.update({f"knn/{k}": v for k, v in knn_topk_accuracy(emb[g], labels[g], emb[p], labels[p]).items()})
    if cfg.get("clustering", True):
        ids, counts = np.unique(labels, return_counts=True)
        keep = np.isin(labels, ids[counts >= 2])  # clusters of one image say nothing
        if keep.sum() > 2:
            res.update(clustering_scores(emb[keep].numpy(), labels[keep], seed=cfg.get("seed", 0)))
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tested = np.ones(len(d), bool) if test_folds is None else np.isin(folds, test_folds)
    images = {
        "eval/roc": save_roc(d[tested], dm.val_issame[tested], out / "roc.png"),
        "eval/distances": save_distance_histogram(d[tested], dm.val_issame[tested], out / "distances.png",
                                                  res["threshold"]),
    }
    loggers = [instantiate(v) for v in (cfg.get("logger") or {}).values()]
    for lg in loggers:
        lg.log_metrics({f"eval/{k}": v for k, v in res.items() if isinstance(v, float)})
        lg.save()
    log_images(loggers, images)
    (out / "eval_metrics.json").write_text(json.dumps(res, indent=2, sort_keys=True))
    print(format_table(res))
    print(f"results: {out / 'eval_metrics.json'}, plots: {out / 'roc.png'}, {out / 'distances.png'}")
    return res
