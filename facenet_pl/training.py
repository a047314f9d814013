"""``train(cfg)``: build data, model, loggers and callbacks from a Hydra config and fit."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from facenet_pl.config_checks import check_config
from facenet_pl.module import FaceNetModule

log = logging.getLogger(__name__)


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group dict (callbacks, loggers)."""
    if not group:
        return []
    return [instantiate(v) for v in group.values() if isinstance(v, DictConfig) and "_target_" in v]


def _prepare_wandb(cfg: DictConfig) -> None:
    """Never block on a W&B login prompt: go offline when no credentials are configured."""
    if not cfg.get("logger") or "wandb" not in cfg.logger or os.environ.get("WANDB_MODE"):
        return
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (netrc.exists() and "api.wandb.ai" in netrc.read_text())
    if not has_key:
        log.warning("no W&B API key found: logging offline (sync later with `wandb sync`)")
        os.environ["WANDB_MODE"] = "offline"


def _resolve_ckpt_path(cfg: DictConfig) -> str | None:
    ckpt = cfg.get("ckpt_path")
    if ckpt is None or ckpt == "last":
        if ckpt == "last":
            path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
            if not path.exists():
                raise FileNotFoundError(f"ckpt_path=last but {path} does not exist: pass the checkpoint's path")
            return str(path)
        return None
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt!r} is not a file")
    return str(ckpt)


def build_module(cfg: DictConfig) -> FaceNetModule:
    return FaceNetModule(
        backbone=cfg.backbone,
        model=cfg.model,
        miner=cfg.miner,
        loss=cfg.loss,
        optimizer=cfg.optimizer,
        scheduler=cfg.get("scheduler"),
        val_folds=cfg.data.get("val_folds", 10),
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the model the config describes; return the final metrics (also in ``metrics.json``).

    With ``cv=N`` (data with folds, e.g. ``data=lfw``) train N times, holding out fold i each time,
    and report the mean +- std of the final-epoch accuracies (not the best epoch: that would be
    chosen on the test fold) in ``cv_metrics.json``.
    """
    check_config(cfg)
    if cfg.get("cv"):
        return cross_validate(cfg)
    return fit_once(cfg)


def cross_validate(cfg: DictConfig) -> dict[str, Any]:
    if "fold" not in cfg.data:
        raise ValueError(f"cv={cfg.cv} needs a data config with folds (data=lfw), not {cfg.data._target_}")
    out_dir = Path(cfg.paths.output_dir)
    accs = []
    for fold in range(int(cfg.cv)):
        fold_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        fold_cfg.cv = None
        fold_cfg.data.fold = fold
        fold_cfg.paths.output_dir = str(out_dir / f"fold_{fold}")
        fold_cfg = OmegaConf.create(OmegaConf.to_container(fold_cfg, resolve=False))
        log.info("cross-validation: fold %d of %d", fold + 1, cfg.cv)
        accs.append(fit_once(fold_cfg)["val/acc"])
    res = {"cv/folds": len(accs), "cv/accuracy": float(np.mean(accs)), "cv/accuracy_std": float(np.std(accs)),
           "cv/fold_accuracies": accs, "val/acc": float(np.mean(accs))}
    (out_dir / "cv_metrics.json").write_text(json.dumps(res, indent=2))
    log.info("cross-validation accuracy: %.4f +- %.4f over %d folds", res["cv/accuracy"], res["cv/accuracy_std"],
             len(accs))
    return res


def fit_once(cfg: DictConfig) -> dict[str, Any]:
    """One training run."""
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    _prepare_wandb(cfg)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    callbacks = _instantiate_group(cfg.get("callbacks"))
    loggers = _instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=_resolve_ckpt_path(cfg))
    elapsed = time.perf_counter() - t0

    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    ckpt_cb = trainer.checkpoint_callback
    if ckpt_cb is not None and getattr(ckpt_cb, "best_model_score", None) is not None:
        metrics["best/" + str(ckpt_cb.monitor)] = float(ckpt_cb.best_model_score)
        metrics["best_model_path"] = ckpt_cb.best_model_path
    metrics.update(epochs=trainer.current_epoch, global_step=trainer.global_step, fit_seconds=round(elapsed, 2))
    if trainer.is_global_zero:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        log.info("metrics: %s", json.dumps(metrics, sort_keys=True))
        log.info("run directory: %s", out_dir)
    return metrics


def optimized_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The value Hydra sweepers optimise: best score of ``optimized_metric`` if known."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    value = metrics.get("best/" + name, metrics.get(name))
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
