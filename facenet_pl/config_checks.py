"""Cheap checks of a composed config, run before any data is generated or model built.

Each error names the config key, what is wrong and what is allowed.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from facenet_pl.data.images import FIT_MODES
from facenet_pl.errors import ConfigError
from facenet_pl.guards import parse_guard_every
from facenet_pl.mining import MINERS
from facenet_pl.schedulers import check_scheduler


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _number(cfg: DictConfig, key: str, kind: type = int, required: bool = True) -> float | int | None:
    """``cfg.<key>`` as a number, or a ConfigError naming the key (``data.p=eight``). A key the config does not
    have is an error when ``required``, else None (the class's own default applies: no default is written here)."""
    node: object = cfg
    for part in key.split("."):
        if node is None or part not in node:
            node = None
            if not required:
                return None
            break
        node = node.get(part)
    try:
        if isinstance(node, bool) or node is None:
            raise TypeError
        value = kind(node)
        if kind is int and value != float(node):
            raise ValueError
        return value
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{key} must be {what}, got {node!r}") from None


def experiment_name() -> str:
    """The ``experiment=`` choice of the running Hydra app ('' outside one or when none was chosen)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return str(HydraConfig.get().runtime.choices.get("experiment") or "")
    except ValueError:  # no Hydra app running (a config composed in a test or a notebook)
        return ""


def check_experiment_task(cfg: DictConfig, task: str) -> None:
    """Experiments say which entry point they are for (``experiment_for``, default train.py)."""
    name = experiment_name()
    wanted = cfg.get("experiment_for")
    if wanted is None:  # train.py experiments (and no experiment at all) say nothing
        if task == "train" or not name:
            return
        wanted = "train"
    wanted, name = str(wanted), name or "<this experiment>"
    _require(
        wanted == task,
        f"experiment={name} is a{'n' if wanted == 'eval' else ''} {wanted}.py experiment "
        f"(conf/experiment/{name}.yaml): "
        + (
            f"python eval.py -m experiment={name} ckpt_path=<checkpoint>"
            if wanted == "eval"
            else f"python train.py experiment={name}; eval.py takes experiment=image_quality or image_size"
        ),
    )


#: Above this margin almost no triplet can be met: the mean squared distance of centred unit vectors is at most 2
#: (P identities at the corners of a regular simplex are 2P / (P - 1) apart), so d(a,n) >= d(a,p) + margin fails
#: for most negatives even with every identity collapsed to a point.
MARGIN_WARN = 2.0


def check_missing(cfg: DictConfig) -> None:
    """Keys left at ``???`` (e.g. ``data=folder`` without ``data.root``): one line, before anything is printed."""
    missing = []
    for key in cfg:
        if key == "hydra":  # Hydra fills its own
            continue
        if OmegaConf.is_missing(cfg, key):
            missing.append(str(key))
        elif OmegaConf.is_config(cfg._get_node(key)):
            missing += list(OmegaConf.missing_keys(cfg[key]))  # full keys (data.root)
    missing.sort()
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no value (??? in the config): set "
            f"{'it' if len(missing) == 1 else 'them'} on the command line, e.g. {missing[0]}=<value>"
        )


def plain(cfg: Any) -> Any:
    """DictConfig -> plain containers (resolved), so checkpoints hold no OmegaConf objects; anything else as is."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def _is_classification(cfg: DictConfig) -> bool:
    """A classification loss (loss=arcface ...): its ``loss.margin`` is the library's angle or cosine margin."""
    return str(cfg.loss.get("_target_", "")).endswith("ClassificationLoss")


def _check_margin(margin: float) -> None:
    _require(margin >= 0, f"loss.margin must be >= 0, got {margin}")
    _require(
        margin < 4,
        f"loss.margin={margin:g} can never be met: squared distances between unit embeddings are "
        "at most 4, so every triplet stays active forever. Use a margin below 4 (FaceNet: 0.2).",
    )
    if margin > MARGIN_WARN:
        import logging

        logging.getLogger(__name__).warning(
            "loss.margin=%g is above %g: unit embeddings of many identities are at most about 2 apart on average "
            "(squared), so almost no triplet can meet it and the loss never settles. FaceNet uses 0.2.",
            margin,
            MARGIN_WARN,
        )


def check_config(cfg: DictConfig) -> None:
    """Validate the values every run depends on."""
    check_missing(cfg)
    check_experiment_task(cfg, "train")
    backbone = cfg.backbone
    triplet_key = "loss.triplet.margin" if isinstance(cfg.loss.get("triplet"), DictConfig) else "loss.margin"
    margin = None if _is_classification(cfg) else _number(cfg, triplet_key, float, required=False)
    if margin is not None:
        _check_margin(margin)
    dim = _number(cfg, "model.embedding_dim")
    _require(dim >= 1, f"model.embedding_dim must be >= 1, got {dim}")
    k = _number(cfg, "data.k")
    _require(k >= 2, f"data.k (images per identity) must be >= 2, got {k}")
    folder = str(cfg.data.get("_target_", "")).endswith(("FolderDataModule", "RecDataModule"))
    for key in ("p", "batches_per_epoch"):
        value = cfg.data.get(key)
        if isinstance(value, str) and value.strip().lower() == "auto":
            _require(folder, f"data.{key}=auto is derived from the files of data=folder; give a number here")
        elif value is not None or key == "p":
            number = _number(cfg, f"data.{key}")
            _require(number >= 1, f"data.{key} must be >= 1, got {number}")
    if cfg.data.get("sampler") == "random" and not _is_classification(cfg):
        import logging

        logging.getLogger(__name__).warning(
            "data.sampler=random with a triplet loss: random batches hold few images of one person, so the miner "
            "finds few anchor-positive pairs. data.sampler=pk is what triplet mining needs."
        )
    fit = cfg.data.get("fit")
    _require(
        fit is None or fit in FIT_MODES,
        f"data.fit={fit!r}: expected crop (centre square), pad (black "
        "borders) or stretch (how a non-square image becomes square)",
    )
    _number(cfg, "data.extra_negatives", int, required=False)
    size = _number(cfg, "backbone.input_size")
    _require(size >= 16, f"backbone.input_size must be >= 16, got {size}")
    _number(cfg, "optimizer.lr", float, required=False)
    if cfg.get("scheduler"):
        check_scheduler(OmegaConf.to_container(cfg.scheduler, resolve=True))
    _number(cfg, "model.max_abs_weight", float, required=False)
    if (cfg.get("model") or {}).get("guard_every_n_steps") is not None:
        parse_guard_every(cfg.model.guard_every_n_steps)
    name = str(backbone.name)
    import timm

    import facenet_pl.models  # noqa: F401  (registers facenet_small)

    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=6, cutoff=0.6)
        raise ConfigError(
            f"backbone.name={name!r} is not a timm model"
            + (f" (close: {', '.join(close)})" if close else "")
            + "; use backbone=<inception|inception_resnet_v1|inception_resnet_v2|resnet18|resnet50|mobilenetv3|small> "
            "or any name from timm.list_models()"
        )
    target = str(cfg.miner.get("_target_", ""))
    known = {f"facenet_pl.mining.{c.__name__}" for c in MINERS.values()}
    _require(
        target in known or "." in target or target in ("", "None"),
        f"miner._target_={target!r} is not a miner; use miner=<{'|'.join(MINERS)}>",
    )
    _require(
        "mining" not in cfg,
        "mining.cross_rank is now miner.cross_rank (it sits with the miner): use miner.cross_rank=true",
    )
    offline = cfg.miner.get("offline") or {}
    every = int(offline.get("every_n_steps") or 0)
    _require(every >= 0, f"miner.offline.every_n_steps must be >= 0 (0 = online mining), got {every}")
    if every:
        for key in ("subset_identities", "images_per_identity"):
            _require(int(offline.get(key, 2)) >= 2, f"miner.offline.{key} must be >= 2, got {offline.get(key)}")
        # (offline x miner.cross_rank is refused by FaceNetModule itself, before any data is decoded)
