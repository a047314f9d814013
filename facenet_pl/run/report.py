"""Turn a finished Hydra multirun (train.py or eval.py) into an ablation table and a plot.

    facenet-pl report outputs/train/multiruns/<time>                       # accuracy vs the swept value
    facenet-pl report outputs/train/multiruns/<time> --x model/macs_per_image   # vs multiply-adds (Figure 4)
    facenet-pl report outputs/eval/multiruns/<time>                        # image quality (eval.py -m)

Writes ``report.md``, ``report.csv`` and ``report.png`` into the multirun directory (``--out`` elsewhere)
and, when the jobs logged to W&B (``logger=wandb``) or ``--wandb`` is given, logs the table and the plot to a
W&B run of the same project. The swept setting is whatever override differs between jobs; the reported
metric is on each job's **test** identities (``test/acc`` for train.py jobs, ``accuracy`` for eval.py).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from facenet_pl.run.summary import collect
from facenet_pl.utils.fileio import atomic_output, write_text_atomic

#: Columns shown per kind of job: the primary metric first (plotted), then the others, then the cost.
TRAIN_METRICS = ["test/acc", "test/val_at_far", "test/auc", "best/val/acc"]
EVAL_METRICS = ["accuracy", "val", "auc", "eer"]
COST = ["model/params", "model/macs_per_image", "fit_seconds"]
_STD = {"test/acc": "test/acc_std", "accuracy": "accuracy_std", "test/val_at_far": None, "val": "val_std"}
#: What a coin scores on metrics whose chance level is fixed: verification pairs are half matched, so accuracy and
#: AUC of a network that knows nothing sit at 0.5 (the plot marks it, and keeps it in view).
CHANCE = 0.5


def chance_level(metric: str) -> float | None:
    """The chance level of ``metric`` (accuracies and AUC of pair verification), None where it has none."""
    name = metric.rsplit("/", 1)[-1]
    return CHANCE if name in {"acc", "accuracy", "auc", "acc_other_folds_threshold"} else None


@dataclass
class Report:
    """What :func:`make_report` produced."""

    markdown: str
    files: dict[str, Path]
    swept: list[str]
    metric: str


def _value(text: Any) -> Any:
    """An override's value as YAML reads it (numbers become numbers, null becomes None)."""
    if not isinstance(text, str):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def swept_settings(rows: list[dict], params: list[str]) -> list[str]:
    """The override keys whose value differs between jobs (all of them when there is one job)."""
    varying = [p for p in params if len({str(r.get(p)) for r in rows}) > 1]
    return varying or params


def _fmt(v: Any, key: str = "", setting: bool = False) -> str:
    if v is None or v == "":
        return "" if v == "" else "none"
    if setting and _is_number(v):  # a swept value as the user typed it (0.05, not 0.0500)
        return f"{v:g}"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if key in ("model/params", "model/macs_per_image"):
            return f"{v / 1e6:.2f}M"
        if key == "fit_seconds":
            return f"{v:.0f}"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _sort_key(v: Any) -> tuple:
    # None (e.g. "no degradation") first, numbers in order, then text in job order (the sort is stable)
    return (0, 0.0) if v is None else (1, float(v)) if _is_number(v) else (2, 0.0)


def make_report(
    multirun_dir: str | Path,
    metric: str | None = None,
    x: str | None = None,
    out_dir: str | Path | None = None,
    force: bool = False,
    use_wandb: bool | None = None,
) -> Report:
    """Table (Markdown + CSV) and plot of ``metric`` against the swept setting (or against ``x``, a metric key)."""
    root = Path(multirun_dir)
    rows = collect(root)
    is_eval = any(r["_metrics_file"] == "eval_metrics.json" for r in rows)
    metrics = EVAL_METRICS if is_eval else TRAIN_METRICS
    metric = metric or metrics[0]
    if not any(metric in r for r in rows):
        found = sorted({k for r in rows for k, v in r.items() if _is_number(v)})
        raise ValueError(
            f"no job in {root} reported {metric!r}"
            + (f"; metrics found: {', '.join(found[:30])}" if found else " (did every job fail? see each job's log)")
        )
    params = sorted({k for r in rows for k in r["_overrides"]} - {"ckpt_path", "hydra.run.dir", "hydra.sweep.dir"})
    swept = swept_settings(rows, params)
    for r in rows:
        for p in params:
            r[p] = _value(r.get(p))
    rows.sort(key=lambda r: tuple(_sort_key(r.get(p)) for p in swept))
    cols = [*swept, *([x] if x and x not in swept else []), metric]
    cols += [m for m in [*metrics, *COST] if m not in cols and any(m in r for r in rows)]
    cols.append("status")

    out = Path(out_dir) if out_dir else root
    out.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out / "report.md", "csv": out / "report.csv", "plot": out / "report.png"}
    existing = [p for p in files.values() if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{existing[0]} exists: not overwriting it (pass --force to replace the report)")

    title = f"{metric} vs {x or ', '.join(swept) or 'job'} ({len(rows)} jobs, {root.name})"
    lines = [f"**{title}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, ""), c, c in swept) for c in cols) + " |" for r in rows]
    markdown = "\n".join(lines) + "\n"
    write_text_atomic(files["markdown"], markdown)
    with atomic_output(files["csv"]) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows([["" if r.get(c) is None else r.get(c, "") for c in cols] for r in rows])
    _plot(rows, swept, metric, x, files["plot"], title)
    wandb_cfg = (_job_config(root, rows).get("logger") or {}).get("wandb")
    if use_wandb or (use_wandb is None and wandb_cfg is not None):
        _log_wandb(root, cols, rows, files, str((wandb_cfg or {}).get("project") or "facenet-pl"))
    return Report(markdown=markdown, files=files, swept=swept, metric=metric)


def _plot(rows: list[dict], swept: list[str], metric: str, x: str | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if _is_number(r.get(metric))]
    std_key = _STD.get(metric)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    label_key = swept[0] if swept else "job"
    if x:  # a metric on the x axis (e.g. multiply-adds): one labelled point per job
        pts = [r for r in ok if _is_number(r.get(x))]
        xs, ys = [r[x] for r in pts], [r[metric] for r in pts]
        ax.scatter(xs, ys)
        for r, xv, yv in zip(pts, xs, ys, strict=True):
            ax.annotate(
                _fmt(r.get(label_key), setting=True), (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
        if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(x)
    else:
        key = label_key
        numeric = [r for r in ok if _is_number(r.get(key))]
        reference = [r for r in ok if r.get(key) is None]
        if numeric and len(numeric) + len(reference) == len(ok):  # numbers (+ a "none" reference row)
            xs = [r[key] for r in numeric]
            ys = [r[metric] for r in numeric]
            err = [r.get(std_key) or 0.0 for r in numeric] if std_key else None
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3)
            for r in reference:
                ax.axhline(r[metric], linestyle="--", color="gray", label=f"{key}=none: {r[metric]:.3f}")
            if min(xs) > 0 and max(xs) / min(xs) >= 8:
                ax.set_xscale("log", base=2)
                ax.set_xticks(xs, [_fmt(v, setting=True) for v in xs])
        else:  # categories (backbone, miner): one bar per job, in table order
            names = [_fmt(r.get(key)) if r.get(key) is not None else f"job {r['job']}" for r in ok]
            err = [r.get(std_key) or 0.0 for r in ok] if std_key else None
            ax.bar(range(len(ok)), [r[metric] for r in ok], yerr=err, capsize=3)
            ax.set_xticks(range(len(ok)), names, rotation=20 if len(ok) > 4 else 0)
        ax.set_xlabel(key)
    chance = chance_level(metric)
    if chance is not None:  # a near-chance sweep autoscales to a few hundredths: keep 0.5 in view, marked
        ax.axhline(chance, linestyle=":", color="tab:red", label=f"chance ({chance:g})")
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, chance - 0.02), max(high, chance + 0.02))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_ylabel(metric + (f" (bars: +- {std_key}, the std over folds)" if std_key and not x else ""))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _job_config(root: Path, rows: list[dict]) -> dict:
    for r in rows:
        path = root / r["job"] / ".hydra" / "config.yaml"
        if path.is_file():
            return yaml.safe_load(path.read_text()) or {}
    return {}


def _log_wandb(root: Path, cols: list[str], rows: list[dict], files: dict[str, Path], project: str) -> None:
    import wandb

    from facenet_pl.run.wandb_setup import wandb_key_configured

    mode = None if wandb_key_configured() else "offline"
    run = wandb.init(
        project=project, job_type="report", name=f"report-{root.name}", dir=str(files["plot"].parent), mode=mode
    )
    table = wandb.Table(columns=cols, data=[[_fmt(r.get(c, ""), c) for c in cols] for r in rows])
    run.log({"report/table": table, "report/plot": wandb.Image(str(files["plot"]))})
    run.finish()
