"""``train(cfg)``: build data, model, loggers and callbacks from a Hydra config and fit."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from facenet_pl.data.images import DEFAULT_FIT
from facenet_pl.models.complexity import model_complexity
from facenet_pl.run.callbacks import FitChecks, ModelSummary, RichModelSummary
from facenet_pl.run.config_checks import check_config
from facenet_pl.run.config_tree import print_config_tree
from facenet_pl.run.loggers import ResumableCSVLogger
from facenet_pl.run.resume import resume_config, run_config
from facenet_pl.run.wandb_setup import prepare_wandb
from facenet_pl.training.checkpoint_io import AtomicCheckpointIO
from facenet_pl.training.guards import NonFiniteLossError
from facenet_pl.training.module import FaceNetModule
from facenet_pl.utils.errors import ConfigError
from facenet_pl.utils.fileio import remove_stale_temps, write_text_atomic

log = logging.getLogger(__name__)


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group dict (callbacks, loggers)."""
    if not group:
        return []
    return [instantiate(v) for v in group.values() if isinstance(v, DictConfig) and "_target_" in v]


def _resolve_ckpt_path(cfg: DictConfig) -> str | None:
    ckpt = cfg.get("ckpt_path")
    if ckpt is None or ckpt == "last":
        if ckpt == "last":
            path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
            if not path.exists():
                raise ConfigError(f"ckpt_path=last but {path} does not exist: pass the checkpoint's path")
            return str(path)
        return None
    if not Path(ckpt).is_file():
        raise ConfigError(f"ckpt_path={ckpt!r} is not a file")
    return str(ckpt)


def _read_resume_checkpoint(path: str) -> dict:
    """The checkpoint to resume from, read without running code from the file."""
    from facenet_pl.inference.model_files import read_checkpoint

    try:
        return read_checkpoint(path)
    except ConfigError as e:
        raise ConfigError(f"ckpt_path: {e}") from None


def _last_good_checkpoint(folder: Path) -> str:
    """ " The last good checkpoint is X (step N)." for the newest checkpoint in ``folder`` (checkpoints with
    diverged weights are never written, so any that reads is good), or a sentence saying there is none."""
    from facenet_pl.inference.model_files import read_checkpoint

    files = sorted(folder.glob("*.ckpt"), key=lambda f: f.stat().st_mtime, reverse=True) if folder.is_dir() else []
    for f in files:
        try:
            step = int(read_checkpoint(f).get("global_step", -1))
        except ConfigError:
            continue
        return f" The last good checkpoint is {f} (step {step}): resume from it with ckpt_path={f}."
    return " No checkpoint was written before it."


def _resume_record_dir(out_dir: Path, accepted: Path | None) -> Path | None:
    """Where a resume's config tree goes: beside Hydra's record of the resume (``.hydra/resume-N``: ``accepted``,
    where train.py recorded it), never over the run's own ``config_tree.txt``; None (printed only) outside a Hydra
    run."""
    from hydra.core.hydra_config import HydraConfig

    if accepted is not None:
        return accepted
    try:
        sub = HydraConfig.get().output_subdir
    except ValueError:
        return None
    return out_dir / sub if sub and sub != ".hydra" else None


def _trainer_config(trainer: DictConfig) -> DictConfig:
    """``sync_batchnorm`` only where PyTorch supports it: SyncBatchNorm needs GPU modules, so DDP on CPU
    (``trainer=ddp trainer.accelerator=cpu``, gloo) keeps per-rank BatchNorm statistics instead."""
    if not trainer.get("sync_batchnorm"):
        return trainer
    import torch

    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        log.info("trainer.sync_batchnorm=true ignored on CPU (SyncBatchNorm needs GPUs): per-rank BatchNorm")
        trainer = trainer.copy()
        trainer.sync_batchnorm = False
    return trainer


def build_module(cfg: DictConfig) -> FaceNetModule:
    module = FaceNetModule(
        backbone=cfg.backbone,
        model=cfg.model,
        miner=cfg.miner,
        loss=cfg.loss,
        optimizer=cfg.optimizer,
        scheduler=cfg.get("scheduler"),
        far_target=cfg.far_target,
        preprocess={
            "crop_size": cfg.data.get("crop_size"),
            "fit": cfg.data.get("fit", DEFAULT_FIT),
            "grayscale": bool(cfg.data.get("grayscale", False)),
        },
        augment=cfg.get("augment") or {"ops": {}},
    )
    module.data_config = OmegaConf.to_container(cfg.data, resolve=True)  # eval.py tests this data's test split
    module.run_config = run_config(cfg)  # a resume continues with it (facenet_pl.run.resume)
    return module


def start_from_weights(module: FaceNetModule, cfg: DictConfig) -> None:
    """``backbone.weights`` (a backbone state dict) and/or ``model.init_from`` (a facenet-pl model file): the
    weights a new run starts from, read without running code from the files."""
    from facenet_pl.inference.model_files import init_from_model
    from facenet_pl.models.weights import load_backbone_weights

    weights, init_from = cfg.backbone.get("weights"), cfg.model.get("init_from")
    if weights and init_from:
        raise ConfigError(
            "backbone.weights and model.init_from both set: init_from replaces the whole network, so the backbone "
            "weights would be overwritten. Set one of them"
        )
    net = getattr(module.net, "_orig_mod", module.net)
    if weights:
        load_backbone_weights(net.backbone, weights, cfg.backbone.name)
    if init_from:
        init_from_model(module, init_from)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the model the config describes; return the final metrics (also in ``metrics.json``).

    With ``cv=N`` (data with folds, e.g. ``data=lfw``) train N times, holding out fold i each time,
    and report the mean +- std of the held-out folds' test accuracies in ``cv_metrics.json`` (each fold's
    checkpoint is chosen on validation identities held out of its training people, never on its test fold).
    """
    check_config(cfg)
    if cfg.get("cv"):
        return cross_validate(cfg)
    return fit_once(cfg)


def _cv_folds(cfg: DictConfig) -> list[tuple[str, Any]]:
    """(data key, value) that makes each cross-validation run: ``data.fold=i`` for data with folds (LFW), or
    ``data.test_identities=[...]`` for a folder (identity-disjoint groups of its people)."""
    n = int(cfg.cv)
    if "fold" in cfg.data:
        return [("fold", i) for i in range(n)]
    if str(cfg.data.get("_target_", "")).endswith(("FolderDataModule", "RecDataModule")):
        from facenet_pl.data.folder_plan import _is_auto, cv_test_folds

        if not _is_auto(cfg.data.get("test_identities", "auto")):
            raise ConfigError(
                f"cv={n} chooses each run's test people (every person is tested once): leave data.test_identities "
                "at auto"
            )
        dm = instantiate(cfg.data)
        _, labels, names = dm._scan()
        return [("test_identities", people) for people in cv_test_folds(labels, names, n, cfg.seed, cfg.data.root)]
    raise ConfigError(f"cv={cfg.cv} needs data with folds (data=lfw), data=folder or data=rec, not {cfg.data._target_}")


def cross_validate(cfg: DictConfig) -> dict[str, Any]:
    """``cv=N``: N runs, each tested on people the others train on; the mean +- std over the runs' test accuracies,
    their 95% interval, and the pooled accuracy (all runs' test pairs together, each scored by its own run)."""
    from facenet_pl.evaluation.verification import ci95, interval_note

    folds = _cv_folds(cfg)
    out_dir = Path(cfg.paths.output_dir)
    runs = []
    for i, (key, value) in enumerate(folds):
        # unresolved: checkpoint folders, logs (${paths.output_dir}/...) follow the fold's own output_dir
        fold_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
        fold_cfg.cv = None
        fold_cfg.data[key] = value
        fold_cfg.paths.output_dir = str(out_dir / f"fold_{i}")
        log.info("cross-validation: fold %d of %d", i + 1, len(folds))
        runs.append(fit_once(fold_cfg))
    accs = [float(m["test/acc"]) for m in runs]
    pairs = [float(m.get("test/pairs", 0)) for m in runs]
    lo, hi = ci95(accs)
    res: dict[str, Any] = {
        "cv/folds": len(accs),
        "cv/accuracy": float(np.mean(accs)),
        "cv/accuracy_std": float(np.std(accs)),
        "cv/accuracy_ci95_low": lo,
        "cv/accuracy_ci95_high": hi,
        "cv/fold_accuracies": accs,
        "cv/pairs": int(sum(pairs)),
        "cv/identities": int(sum(float(m.get("test/identities", 0)) for m in runs)),
        "test/acc": float(np.mean(accs)),
    }
    if sum(pairs):
        res["cv/pooled_accuracy"] = float(np.dot(accs, pairs) / sum(pairs))
    if all("test/auc" in m for m in runs):
        res["cv/auc"] = float(np.mean([m["test/auc"] for m in runs]))
    if folds[0][0] == "test_identities":
        res["cv/test_identities"] = [v for _, v in folds]
    write_text_atomic(out_dir / "cv_metrics.json", json.dumps(res, indent=2))
    log.info(
        "cross-validation accuracy: %.4f +- %.4f over %d folds (95%% interval %.4f-%.4f%s); pooled over %d test "
        "pairs of %d people: %.4f",
        res["cv/accuracy"],
        res["cv/accuracy_std"],
        len(accs),
        lo,
        hi,
        interval_note(lo, hi, len(accs), res["cv/identities"], what="runs"),
        res["cv/pairs"],
        res["cv/identities"],
        res.get("cv/pooled_accuracy", float("nan")),
    )
    return res


def fit_once(cfg: DictConfig) -> dict[str, Any]:
    """One training run."""
    out_dir = Path(cfg.paths.output_dir)
    ckpt_path = _resolve_ckpt_path(cfg)
    existing = sorted((out_dir / "checkpoints").glob("*.ckpt")) if (out_dir / "checkpoints").is_dir() else []
    if existing and ckpt_path is None:
        raise ConfigError(
            f"the run directory {out_dir} already holds checkpoints ({existing[0].name}, ...): not overwriting them. "
            "Resume with ckpt_path=last, or choose another hydra.run.dir."
        )
    resume_step = None
    if ckpt_path:  # also refuses a file that would run code; the run continues with its own config
        ckpt = _read_resume_checkpoint(ckpt_path)
        resume_step = int(ckpt.get("global_step", -1))
        cfg = resume_config(cfg, (ckpt.get("facenet_pl") or {}).get("config"), ckpt_path)
        check_config(cfg)
        del ckpt
    record = None
    if ckpt_path and rank_zero_only.rank == 0:
        from facenet_pl.run.dirs import accept_resume_record

        record = accept_resume_record()  # the resume passed its checks: its record is .hydra/resume-N from here on
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    prepare_wandb(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir / "checkpoints")  # left by a run killed while writing a checkpoint
    if (cfg.get("extras") or {}).get("print_config") and rank_zero_only.rank == 0:
        print_config_tree(cfg, out_dir if ckpt_path is None else _resume_record_dir(out_dir, record))

    datamodule = instantiate(cfg.data)
    if hasattr(datamodule, "check_training_data"):  # what only training needs, before anything is built
        datamodule.check_training_data()
    module = build_module(cfg)
    if ckpt_path is None:  # a resumed run's weights come from its checkpoint
        start_from_weights(module, cfg)
    callbacks = _instantiate_group(cfg.get("callbacks"))
    loggers = _instantiate_group(cfg.get("logger"))
    if not loggers:  # nothing to send learning rates to (Lightning would refuse to start)
        callbacks = [cb for cb in callbacks if not isinstance(cb, pl.callbacks.LearningRateMonitor)]
    if cfg.trainer.get("enable_progress_bar") is False:  # the override wins over the callbacks group's bar
        callbacks = [cb for cb in callbacks if not isinstance(cb, pl.callbacks.ProgressBar)]
    if cfg.trainer.get("enable_model_summary") is not False and not any(
        isinstance(cb, pl.callbacks.ModelSummary) for cb in callbacks
    ):  # Lightning's own summary would print "Total FLOPs: 0" (no example input): ours counts them
        from pytorch_lightning.utilities.imports import _RICH_AVAILABLE  # Lightning's own choice of the two

        callbacks.append(RichModelSummary() if _RICH_AVAILABLE else ModelSummary())
    callbacks.append(FitChecks())  # validation cut short, a small folder from scratch: before the first step
    if ckpt_path:  # the CSV logger drops rows logged after this checkpoint (they are trained again)
        for lg in loggers:
            if isinstance(lg, ResumableCSVLogger):
                lg.resume_step = resume_step
    trainer: pl.Trainer = instantiate(
        _trainer_config(cfg.trainer),
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO(module.max_abs_weight)],
    )
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    t0 = time.perf_counter()
    try:
        # weights_only: resuming never unpickles code (facenet-pl checkpoints hold tensors and plain data only)
        with _exit_status_on_interrupt(trainer, out_dir):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except NonFiniteLossError as e:
        raise type(e)(f"{e}{_last_good_checkpoint(out_dir / 'checkpoints')}") from None
    elapsed = time.perf_counter() - t0

    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    ckpt_cb = next((cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), None)
    best_path = None
    if ckpt_cb is not None and getattr(ckpt_cb, "best_model_score", None) is not None:
        metrics["best/" + str(ckpt_cb.monitor)] = float(ckpt_cb.best_model_score)
        metrics["best_model_path"] = best_path = ckpt_cb.best_model_path
    metrics.update(epochs=trainer.current_epoch, global_step=trainer.global_step, fit_seconds=round(elapsed, 2))
    if hasattr(datamodule, "resolved_settings"):  # what "auto" became: P, batches per epoch, people per split
        metrics.update({f"data/{k}": v for k, v in datamodule.resolved_settings().items()})
    if trainer.is_global_zero:  # parameters and multiply-adds per image, for accuracy-vs-cost tables
        metrics.update(model_complexity(getattr(module.net, "_orig_mod", module.net), module.input_size))
    if trainer.is_global_zero:  # what training measured is on disk before the test phase can fail
        _write_metrics(out_dir, metrics)
    if cfg.get("test", True):
        with _exit_status_on_interrupt(trainer, out_dir):
            metrics.update(_test(trainer, module, datamodule, best_path))
    if trainer.is_global_zero and module.last_eval:
        try:
            _save_plots(module, out_dir, loggers)
        except OSError as e:  # a full disk loses the pictures, not the numbers
            from facenet_pl.utils.errors import free_space, is_disk_full

            where = Path(e.filename) if e.filename else out_dir
            room = f", {free_space(where.parent if e.filename else where)} there" if is_disk_full(e) else ""
            log.warning("could not write %s (%s%s): the ROC / distance plots skipped", where, e.strerror or e, room)
    if trainer.is_global_zero:
        _write_metrics(out_dir, metrics)
        log.info("metrics: %s", json.dumps(metrics, sort_keys=True))
        log.info("run directory: %s", out_dir)
    return metrics


#: What a shell reports for a process ended by the signal: 128 + its number.
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


@contextlib.contextmanager
def _exit_status_on_interrupt(trainer: pl.Trainer, out_dir: Path) -> Iterator[None]:
    """An interrupted run exits non-zero. Lightning ends a run stopped by SIGTERM with ``SIGTERMException``, a
    ``SystemExit`` of status 0 (a scheduler, a sweep or a script would read the run as finished), and Ctrl-C with
    ``exit(1)``: exit 143 / 130 instead, as a shell reports those signals, with one line saying how to resume."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    try:
        yield
    except SystemExit as e:
        if isinstance(e, SIGTERMException):
            code, what = EXIT_SIGTERM, "SIGTERM"
        elif isinstance(e.__context__, KeyboardInterrupt):
            code, what = EXIT_SIGINT, "Ctrl-C"
        else:
            raise
        if trainer.is_global_zero:
            last = out_dir / "checkpoints" / "last.ckpt"
            saved = f"{last} holds step {trainer.global_step}" if last.is_file() else "no checkpoint was written"
            log.error(
                "interrupted by %s at step %d: %s; resume with: python train.py hydra.run.dir=%s ckpt_path=last",
                what,
                trainer.global_step,
                saved,
                out_dir,
            )
        raise SystemExit(code) from None


def _write_metrics(out_dir: Path, metrics: dict[str, Any]) -> None:
    """``metrics.json``, whole or not at all (temp file + rename): a full disk leaves the previous version."""
    from facenet_pl.utils.fileio import atomic_write

    atomic_write(out_dir / "metrics.json", lambda f: f.write(json.dumps(metrics, indent=2, sort_keys=True).encode()))


def _test(trainer: pl.Trainer, module: FaceNetModule, datamodule, best_path: str | None) -> dict[str, Any]:
    """Test the run's model on the test identities: the best checkpoint by validation, else the last weights."""
    datamodule.setup("test")
    if getattr(datamodule, "test_split", None) is None:
        log.info("no test split in this data (test identities 0): not testing")
        return {}
    which = best_path if best_path else None
    log.info("testing %s on %s", which or "the last epoch's weights", datamodule.test_split.name)
    results = trainer.test(module, datamodule=datamodule, ckpt_path=which, weights_only=True, verbose=False)
    out: dict[str, Any] = {k: float(v) for k, v in (results[0] if results else {}).items()}
    out["test/checkpoint"] = which or "last epoch"
    out["test/on"] = datamodule.test_split.name
    out["test/flip"] = module.eval_flip
    if "test/acc" in out:
        from facenet_pl.evaluation.verification import interval_note

        lo, hi = out["test/acc_ci95_low"], out["test/acc_ci95_high"]
        note = interval_note(lo, hi, int(out["test/folds"]), int(out["test/identities"]))
        log.info(
            "test accuracy %.4f +- %.4f (95%% interval %.4f-%.4f%s) on %d pairs of %d identities",
            out["test/acc"],
            out["test/acc_std"],
            lo,
            hi,
            note + ("; cv=N on data=folder tests every person once, over N runs" if note else ""),
            out["test/pairs"],
            out["test/identities"],
        )
    return out


def _save_plots(module: FaceNetModule, out_dir: Path, loggers: list) -> None:
    """ROC and distance histograms of the test pairs (else the last validation), as PNGs in the run dir and
    in the loggers."""
    from facenet_pl.evaluation.plots import log_images, save_pair_plots

    stage = "test" if "test" in module.last_eval else "val"
    d, split, _ = module.last_eval[stage]
    label = "stored threshold (validation people)"
    images = save_pair_plots(d, split, out_dir, float(module.threshold), stage, threshold_label=label)
    log_images(loggers, images, step=module.global_step)


def optimized_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The value Hydra sweepers optimise: best score of ``optimized_metric`` if known."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    value = metrics.get("best/" + name, metrics.get(name))
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
