"""``eval.py benchmark=bins benchmark.dir=DIR``: the field's verification table over insightface ``.bin`` sets.

One row per set (lfw, cfp_fp, agedb_30, calfw, cplfw, ...): 10-fold accuracy +- std (consecutive folds, threshold
fit on 9, as insightface's ``verification.py``), AUC, EER, VAL at ``far_target`` where the 9 training folds hold
enough different pairs to measure it, and the pairs. Written to ``eval_metrics.json`` as ``<set>/acc`` etc., so
``facenet-pl report`` tabulates a multirun of it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from facenet_pl.data.binsets import bin_verification_set
from facenet_pl.evaluation import score_split
from facenet_pl.evaluation.degrade import Degradation
from facenet_pl.inference.embed import embed_dataset, load_model
from facenet_pl.utils.errors import ConfigError
from facenet_pl.utils.fileio import write_text_atomic

log = logging.getLogger(__name__)


def find_bins(directory: str | Path, sets: list[str] | None) -> list[Path]:
    """The ``.bin`` files to score: ``DIR/<name>.bin`` for each of ``sets``, or every ``.bin`` in ``DIR``."""
    d = Path(str(directory)).expanduser()
    if not d.is_dir():
        raise ConfigError(f"benchmark.dir={directory}: not a folder (the one holding lfw.bin, cfp_fp.bin, ...)")
    if sets:
        paths = [d / (s if str(s).endswith(".bin") else f"{s}.bin") for s in sets]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            have = ", ".join(sorted(p.stem for p in d.glob("*.bin"))) or "none"
            raise ConfigError(f"benchmark.sets: {', '.join(missing)} not in {d} (it has: {have})")
        return paths
    paths = sorted(d.glob("*.bin"))
    if not paths:
        raise ConfigError(f"benchmark.dir={d} holds no .bin file")
    return paths


def val_measurable(split, far_target: float) -> tuple[bool, int]:
    """Whether every fold's 9 training folds hold at least ``1 / far_target`` different-identity pairs (else the
    threshold at that FAR is the smallest distance, and VAL says nothing), and the fewest they hold."""
    fewest = min(int((~split.issame[split.folds != f]).sum()) for f in np.unique(split.folds))
    return fewest * far_target >= 1, fewest


def evaluate_bins(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg.ckpt_path`` on every chosen ``.bin``; print the table; return the flat results."""
    torch.manual_seed(int(cfg.get("seed", 0)))
    bench = cfg.benchmark
    paths = find_bins(bench.dir, list(bench.get("sets") or []))
    degrade = Degradation.from_config(cfg.get("degrade"))
    module = load_model(cfg.ckpt_path)
    flip = module.eval_flip if cfg.get("flip") is None else bool(cfg.flip)
    far = float(cfg.far_target)
    rows: dict[str, dict[str, Any]] = {}
    for path in paths:
        split = bin_verification_set(path, module.input_size, int(bench.get("workers", 0)))
        emb = embed_dataset(module, split.dataset, int(cfg.get("batch_size", 256)), flip=flip, transform=degrade)
        d = split.distances(emb)
        res = score_split(split, d, far_target=far)
        ok, fewest = val_measurable(split, far)
        rows[path.stem] = {
            "acc": res["accuracy"],
            "acc_std": res["accuracy_std"],
            "auc": res["auc"],
            "eer": res["eer"],
            "val": res["val"] if ok else None,
            "val_std": res["val_std"] if ok else None,
            "threshold": res["threshold"],
            "pairs": res["pairs"],
            "different_pairs_in_training_folds": fewest,
        }
        log.info("%s: accuracy %.4f +- %.4f over %d pairs", path.name, res["accuracy"], res["accuracy_std"], len(d))
    out: dict[str, Any] = {f"{name}/{k}": v for name, row in rows.items() for k, v in row.items()}
    out.update(
        accuracy=float(np.mean([r["acc"] for r in rows.values()])),
        sets=list(rows),
        ckpt_path=str(cfg.ckpt_path),
        flip=flip,
        model_flip=module.eval_flip,
        far_target=far,
        protocol="10 folds of consecutive pairs; threshold maximising accuracy on 9 folds, accuracy on the 10th",
        **{f"degrade/{k}": v for k, v in degrade.describe().items()},
    )
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "eval_metrics.json", json.dumps(out, indent=2, sort_keys=True))
    print(format_bins_table(rows, far, flip))
    print(f"results: {out_dir / 'eval_metrics.json'}")
    return out


def format_bins_table(rows: dict[str, dict[str, Any]], far_target: float, flip: bool) -> str:
    """The markdown table: one row per set."""
    lines = [
        f"| set | accuracy | AUC | EER | VAL @ FAR={far_target:g} | pairs |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        val = (
            f"{r['val']:.4f} +- {r['val_std']:.4f}"
            if r["val"] is not None
            else f"n/a ({r['different_pairs_in_training_folds']} different pairs in 9 folds < 1/FAR)"
        )
        acc = f"{r['acc']:.4f} +- {r['acc_std']:.4f}"
        lines.append(f"| {name} | {acc} | {r['auc']:.4f} | {r['eer']:.4f} | {val} | {r['pairs']} |")
    lines.append(f"(10 consecutive folds, threshold fit on 9; flip averaging {'on' if flip else 'off'})")
    return "\n".join(lines)
