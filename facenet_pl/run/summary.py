"""Tabulate a Hydra multirun directory: one row per job, its overrides and final metrics.

facenet-pl summary outputs/train/multiruns/<time> [--sort best/val/acc] [--csv summary.csv]
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import yaml

from facenet_pl.utils.fileio import atomic_output

#: Sorted by validation; the test accuracy is shown beside it, never used to rank (that would select on it).
DEFAULT_METRICS = ["best/val/acc", "val/acc", "val/auc", "val/eer", "test/acc", "epochs", "fit_seconds"]


def collect(multirun_dir: str | Path) -> list[dict]:
    """One dict per job folder (numbered sub-folders with .hydra/overrides.yaml): its overrides and metrics, and
    ``_overrides`` (the override keys) and ``_metrics_file`` (``metrics.json`` of train.py, ``eval_metrics.json``
    of eval.py, or None)."""
    root = Path(multirun_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    rows = []
    for job in sorted(
        (p for p in root.iterdir() if p.is_dir() and (p / ".hydra").is_dir()),
        key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else p.name),
    ):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
        row: dict = {"job": job.name, "status": "ok"}
        given = dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith("hydra"))
        row.update(given, _overrides=sorted(given), _metrics_file=None)
        mfile = job / "metrics.json"
        if not mfile.exists():  # an eval.py multirun job
            mfile = job / "eval_metrics.json"
        if mfile.exists():
            row.update(json.loads(mfile.read_text()), _metrics_file=mfile.name)
        else:
            row["status"] = "no metrics (failed or running)"
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"{root} holds no Hydra job folders")
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def summarize(
    multirun_dir: str | Path,
    sort: str = "best/val/acc",
    metrics: list[str] | None = None,
    csv_path: str | Path | None = None,
) -> str:
    rows = collect(multirun_dir)
    params = sorted(
        {k for r in rows for k in r if not k.startswith("_")}
        - {"job", "status"}
        - {k for r in rows for k, v in r.items() if isinstance(v, (int, float))}
        - {"best_model_path", "test/checkpoint", "test/on"}
    )
    metric_cols = [m for m in (metrics or DEFAULT_METRICS) if any(m in r for r in rows)]
    rows.sort(key=lambda r: -r[sort] if isinstance(r.get(sort), (int, float)) else math.inf)
    cols = ["job", *params, *metric_cols, "status"]
    if csv_path:
        with atomic_output(csv_path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
