"""``evaluate(cfg)``: the verification table (plus k-NN and clustering) of a trained model on a test split.

By default a checkpoint is evaluated on its own run's **test** identities: the checkpoint carries the data
config it was trained with and the names of its validation and test identities, and the evaluation stops
if the data no longer yields those same test people. ``data=...`` evaluates other data (with a warning
when it differs from the training data); ``split=all`` makes every identity of a folder a test identity.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from facenet_pl.data.pairs import VerificationSet, identities_with_pairs
from facenet_pl.evaluation import accuracy_at, clustering_scores, knn_topk_accuracy, score_split, split_gallery_probe
from facenet_pl.evaluation.degrade import Degradation
from facenet_pl.evaluation.plots import log_images, save_pair_plots
from facenet_pl.evaluation.verification import interval_note
from facenet_pl.inference.embed import embed_dataset, load_model
from facenet_pl.run.config_checks import check_experiment_task
from facenet_pl.run.wandb_setup import prepare_wandb
from facenet_pl.utils.config import plain as _plain
from facenet_pl.utils.errors import ConfigError
from facenet_pl.utils.fileio import write_text_atomic

log = logging.getLogger(__name__)

SPLITS = ("test", "val", "all")
#: Data settings that do not change which images or people a split holds.
_NO_EFFECT = {
    "num_workers",
    "val_batch_size",
    "decode_workers",
    "cache_dir",
    "p",
    "k",
    "extra_negatives",
    "few_images",
    "batches_per_epoch",
    "val_bins",
    "bins_dir",
}


def format_table(res: dict[str, Any]) -> str:
    """The result as aligned ``name  value`` rows."""
    rows = [
        ("evaluated on", f"{res['on']} ({res['split']} split)"),
        (
            "accuracy",
            f"{res['accuracy']:.4f} +- {res['accuracy_std']:.4f} over {res['folds']} folds "
            f"(95% interval {res['accuracy_ci95_low']:.4f}-{res['accuracy_ci95_high']:.4f}"
            + interval_note(res["accuracy_ci95_low"], res["accuracy_ci95_high"], res["folds"], res["identities"])
            + ")",
        ),
        (
            f"VAL @ FAR={res['far_target']:g}",
            f"{res['val']:.4f} +- {res['val_std']:.4f} (achieved FAR {res['far']:.5f})",
        ),
        ("AUC", f"{res['auc']:.4f}"),
        ("EER", f"{res['eer']:.4f}"),
        ("threshold", f"{res['threshold']:.4f} (from {res['threshold_from']})"),
    ]
    if "accuracy_other_folds_threshold" in res:
        biased = " (biased: the model trained on those folds' people)" if res.get("trained_on_other_folds") else ""
        rows.append(("accuracy, threshold of the other folds", f"{res['accuracy_other_folds_threshold']:.4f}{biased}"))
    if "acc_at_model_threshold" in res:
        rows.append(
            (
                "accuracy at the model's threshold",
                f"{res['acc_at_model_threshold']:.4f} (threshold {res['model_threshold']:.4f}, calibrated on "
                f"{res['model_calibrated_on']})",
            )
        )
    rows += [("pairs / identities", f"{res['pairs']} / {res['identities']}"), ("flip averaging", str(res["flip"]))]
    degraded = {k.split("/", 1)[1]: v for k, v in res.items() if k.startswith("degrade/") and v is not None}
    if degraded:
        rows.append(("test images degraded", ", ".join(f"{k}={v}" for k, v in degraded.items())))
    rows += [(k, f"{v:.4f}") for k, v in res.items() if k.startswith(("knn/", "kmeans/", "agglomerative/"))]
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def check_no_backbone_overrides(cfg: DictConfig) -> None:
    """eval.py evaluates the checkpoint's network as it was trained: a ``backbone.*`` override cannot change it, so
    it is refused rather than ignored."""
    given = _plain(cfg.get("backbone")) or {}
    keys = sorted(f"backbone.{k}" for k, v in given.items() if k != "input_size" or v is not None)
    if keys:
        raise ConfigError(
            f"eval.py takes the network from the checkpoint: {', '.join(keys)} cannot change it. To test other image "
            "sizes use degrade.image_size=<px> (shrunk, then scaled to the network's input) or data.image_size=<px>"
        )


def _same_folder(a: Any, b: Any) -> bool:
    if not a or not b:
        return False
    try:
        return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()
    except OSError:
        return str(a) == str(b)


def _check_vouched(ckpt_path: str, stored: dict[str, Any]) -> None:
    """Refuse, in one line, data paths that only the checkpoint names (see ``run_dirs.unvouched_data_paths``)."""
    from facenet_pl.run.dirs import unvouched_data_paths

    unvouched = unvouched_data_paths(ckpt_path, stored)
    if unvouched:
        named = ", ".join(f"data.{k}={v}" for k, v in unvouched.items())
        raise ConfigError(
            f"{ckpt_path} names the data it was trained on ({named}), but no run folder's record beside it "
            "(../.hydra/config.yaml) names the same, so that path is not read on the file's word: give the data "
            f"yourself, +data.{next(iter(unvouched))}=<path> (the run's other data settings kept), or "
            "data=folder data.root=<folder> split=all for a folder of people the model never saw"
        )


def resolve_data_config(cfg: DictConfig, module) -> tuple[dict[str, Any], bool]:
    """The data to evaluate and whether it is the training run's own: ``(config, same_as_training)``.

    No ``data=`` given: the checkpoint's training data (``+data.key=value`` entries override keys of it).
    ``data=<group>`` given: that data, with a warning listing how it differs from the training data.
    """
    trained = module.data_config
    if trained is not None and "cache_dir" in trained:  # where to write comes from this run, never from the file
        trained = {**trained, "cache_dir": _plain(cfg.get("paths") or {}).get("cache_dir")}
    given = _plain(cfg.get("data")) or None
    if trained is not None and (given is None or "_target_" not in given):  # the file's data is to be read
        _check_vouched(cfg.ckpt_path, {k: v for k, v in trained.items() if k not in (given or {})})
    if given is not None and "_target_" not in given:  # +data.key=value: override keys of the run's data
        if trained is None:
            raise ConfigError(
                f"{cfg.ckpt_path} carries no training data config to override: choose the data with "
                "data=folder data.root=... (or data=synthetic / data=lfw)"
            )
        merged = {**trained, **given}
        changed = sorted(k for k in given if k not in _NO_EFFECT and given[k] != trained.get(k))
        if changed:
            log.warning(
                "evaluating the training data with %s changed: the split may no longer be the run's own",
                ", ".join(f"data.{k}" for k in changed),
            )
        return merged, not changed
    if given is None:
        if trained is None:
            raise ConfigError(
                f"{cfg.ckpt_path} carries no training data config (a .safetensors file, or a checkpoint"
                " from an older facenet-pl): choose the data, e.g. data=folder data.root=<dir> split=all"
            )
        return dict(trained), True
    if given.get("image_size") is None:
        given["image_size"] = module.input_size
    if trained is not None:
        keys = sorted(k for k in set(given) | set(trained) if k not in _NO_EFFECT and given.get(k) != trained.get(k))
        if str(cfg.get("split", "test")) == "all":  # every person of the folder is tested: is any trained on?
            if _same_folder(given.get("root"), trained.get("root")):
                log.warning(
                    "split=all on data.root=%s, the folder the model was trained on: most of its people were "
                    "trained on, so the accuracy is optimistic. Evaluate a folder of people the model never saw",
                    given.get("root"),
                )
            return given, False
        if keys:
            log.warning(
                "the data differs from the training data in %s: its 'test' identities are not the run's own "
                "held-out people and may include people the model was trained on (split=all on a folder of "
                "new people avoids that)",
                ", ".join(f"data.{k}" for k in keys),
            )
            return given, False
    return given, trained is not None


def select_split(dm, split: str, module, same_data: bool) -> VerificationSet:
    """The pairs to evaluate; for the run's own data, checks that they hold the identities recorded at training."""
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
    if split == "all":
        if not hasattr(dm, "whole_folder_split"):
            raise ConfigError(
                f"split=all evaluates every identity of a folder: use data=folder, not {type(dm).__name__}"
            )
        return dm.whole_folder_split()
    dm.setup("test" if split == "test" else "validate")
    chosen = getattr(dm, f"{split}_split", None)
    if chosen is None:
        raise ConfigError(
            f"the data has no {split} split (data.{split}_identities is 0): choose split="
            f"{'val' if split == 'test' else 'test'} or set data.{split}_identities"
        )
    recorded = (getattr(module, "identity_splits", None) or {}).get(split)
    if same_data and recorded is not None and sorted(recorded) != sorted(chosen.identities):
        missing = sorted(set(recorded) - set(chosen.identities))
        raise ConfigError(
            f"the {split} identities of {chosen.name} differ from the {len(recorded)} recorded when the model was "
            f"trained ({len(missing)} missing{', e.g. ' + repr(missing[0]) if missing else ''}): the data changed, so "
            f"this '{split}' split may hold people the model trained on. Restore the data, or evaluate a folder of "
            "people the model never saw with data=folder data.root=<folder> split=all"
        )
    return chosen


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    if cfg.get("benchmark"):
        if cfg.get("data"):
            raise ConfigError("benchmark=bins scores .bin sets: drop data=... (or drop benchmark= to evaluate data)")
        from facenet_pl.run.evaluate_bins import evaluate_bins

        check_no_backbone_overrides(cfg)
        return evaluate_bins(cfg)
    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)
    check_experiment_task(cfg, "eval")
    check_no_backbone_overrides(cfg)
    degrade = Degradation.from_config(cfg.get("degrade"))  # a bad setting fails before the model loads
    module = load_model(cfg.ckpt_path)
    data_cfg, same_data = resolve_data_config(cfg, module)
    if not str(data_cfg.get("_target_", "")).endswith("SyntheticFaceDataModule"):  # real faces, synthetic model
        from facenet_pl.inference.model_files import synthetic_only_warning

        warning = synthetic_only_warning(module)
        if warning:
            log.warning(warning)
    split_name = str(cfg.get("split", "test"))
    dm = instantiate(data_cfg, _convert_="all")
    split = select_split(dm, split_name, module, same_data)
    flip = module.eval_flip if cfg.get("flip") is None else bool(cfg.flip)
    emb = embed_dataset(module, split.dataset, cfg.get("batch_size", 256), flip=flip, transform=degrade)
    d = split.distances(emb)
    if not same_data:  # what the model trained on is not this data's other folds: plain k-fold thresholds
        split.trained_on_other_folds = False
    # the run's own test people: at its validation threshold, as train.py's test/acc; other pairs (other data, or
    # the validation people who chose that threshold): k-fold, the data's own protocol
    own_test = same_data and split_name == "test"
    res: dict[str, Any] = score_split(
        split, d, far_target=cfg.far_target, val_threshold=float(module.threshold) if own_test else None
    )
    res["trained_on_other_folds"] = split.trained_on_other_folds
    res.update(
        far_target=cfg.far_target,
        split=split_name,
        ckpt_path=str(cfg.ckpt_path),
        flip=flip,
        model_flip=module.eval_flip,
        same_data_as_training=same_data,
        **{f"degrade/{k}": v for k, v in degrade.describe().items()},
    )
    if flip != module.eval_flip:
        log.warning("flip=%s but the model was validated with model.eval_flip=%s", flip, module.eval_flip)
    thr = float(module.threshold)
    if math.isfinite(thr):
        res.update(
            acc_at_model_threshold=accuracy_at(split, d, thr),
            model_threshold=thr,
            model_calibrated_on=(module.calibration or {}).get("on", "unknown data"),
        )
    labels = split.labels
    if cfg.get("knn", True):
        g, p = split_gallery_probe(labels, 1, seed)
        if len(p):
            res.update({f"knn/{k}": v for k, v in knn_topk_accuracy(emb[g], labels[g], emb[p], labels[p]).items()})
    if cfg.get("clustering", True):
        keep = np.isin(labels, identities_with_pairs(labels))  # clusters of one image say nothing
        if keep.sum() > 2:
            res.update(clustering_scores(emb[keep].numpy(), labels[keep], seed=seed))
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    label = f"threshold ({res['threshold_from']})"
    images = save_pair_plots(d, split, out, res["threshold"], "eval", threshold_label=label)
    prepare_wandb(cfg)
    loggers = [instantiate(v) for v in (cfg.get("logger") or {}).values()]
    for lg in loggers:
        lg.log_metrics(
            {f"eval/{k}": float(v) for k, v in res.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        )
    log_images(loggers, images)
    for lg in loggers:
        lg.finalize("success")  # writes the CSV, closes a W&B run
    write_text_atomic(out / "eval_metrics.json", json.dumps(res, indent=2, sort_keys=True))
    print(format_table(res))
    print(f"results: {out / 'eval_metrics.json'}, plots: {out / 'roc.png'}, {out / 'distances.png'}")
    return res
