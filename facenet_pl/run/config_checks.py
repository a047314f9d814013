"""Cheap checks of a composed config, run before any data is generated or model built.

Each error names the config key, what is wrong and what is allowed. :func:`check_config_early` needs neither torch
nor Lightning (importing them takes ~8 s on 2 cores): the entry points run it first, so a typo costs about a
second (``benchmarks/bench_error_latency.py``); :func:`check_config` adds what needs them (timm's registry, the
scheduler class, ...).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError

from facenet_pl.utils.errors import ConfigError


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
    """Keys left at ``???`` (e.g. ``data=folder`` without ``data.root``, or ``seed=???``, which ``data.seed`` refers
    to) or at ``${missing:}`` (``experiment=finetune``'s ``model.init_from``): one line, before anything is printed."""
    keys = missing_keys(cfg)
    if keys:
        raise ConfigError(
            f"{', '.join(keys)} {'has' if len(keys) == 1 else 'have'} no value (??? in the config): set "
            f"{'it' if len(keys) == 1 else 'them'} on the command line, e.g. {keys[0]}=<value>"
        )


def missing_keys(cfg: DictConfig) -> list[str]:
    """The keys a user must still give (:func:`check_missing`), sorted; Hydra's own ``hydra`` node is skipped."""
    missing: set[str] = set()

    def walk(node: Any, prefix: str) -> None:
        listed = OmegaConf.is_list(node)
        for key in range(len(node)) if listed else list(node.keys()):
            if prefix == "" and key == "hydra":  # Hydra fills its own
                continue
            full = f"{prefix.rstrip('.')}[{key}]" if listed else f"{prefix}{key}"
            if OmegaConf.is_missing(node, key):
                missing.add(full)
                continue
            child = node._get_node(key)
            if OmegaConf.is_interpolation(node, key):
                try:
                    node[key]
                except InterpolationToMissingValueError as e:  # ${seed} with seed=???: name the empty key
                    target = str(child._value()).strip("${}")
                    if target.startswith("missing:"):  # ${missing:}: this key itself
                        missing.add(full)
                    else:
                        missing.add(target if "." not in target and ":" not in target else f"{full} ({e})")
                except Exception:  # noqa: BLE001 - other resolution errors are reported where the value is used
                    pass
                continue
            if OmegaConf.is_config(child):
                walk(child, f"{full}.")

    walk(cfg, "")
    return sorted(missing)


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


#: trainer.<key>: (smallest allowed integer, what it means); ints Lightning takes, checked before it is imported.
_TRAINER_INTS = {
    "max_epochs": (-1, "-1: no limit"),
    "max_steps": (-1, "-1: no limit"),
    "min_epochs": (0, ""),
    "check_val_every_n_epoch": (1, ""),
    "log_every_n_steps": (1, ""),
    "accumulate_grad_batches": (1, ""),
    "num_sanity_val_steps": (-1, "-1: the whole validation set"),
}


def _check_trainer(cfg: DictConfig) -> None:
    """The trainer's numbers as Lightning will take them, named in one line (``trainer.max_epochs=abc`` reached
    Lightning's own comparison as a TypeError)."""
    trainer = cfg.get("trainer") or {}
    for key, (low, note) in _TRAINER_INTS.items():
        if trainer.get(key) is None:
            continue
        n = _number(cfg, f"trainer.{key}")
        _require(n >= low, f"trainer.{key} must be >= {low}{f' ({note})' if note else ''}, got {n}")
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = trainer.get(key)
        if value is None:
            continue
        n = _number(cfg, f"trainer.{key}", float)
        _require(
            n >= 0 and (n <= 1 or float(n).is_integer()),
            f"trainer.{key}={value!r}: a fraction in [0, 1] or a whole number of batches",
        )
    clip = trainer.get("gradient_clip_val")
    if clip is not None:
        _require(
            _number(cfg, "trainer.gradient_clip_val", float) >= 0, f"trainer.gradient_clip_val must be >= 0, got {clip}"
        )


def _devices(cfg: DictConfig) -> int:
    """How many processes the trainer will run (devices x nodes), 1 where the config leaves it to Lightning."""
    trainer = cfg.get("trainer") or {}
    devices = trainer.get("devices", 1)
    n = len(devices) if OmegaConf.is_list(devices) else devices if isinstance(devices, int) and devices > 0 else 1
    nodes = trainer.get("num_nodes", 1)
    return n * (nodes if isinstance(nodes, int) and nodes > 0 else 1)


def check_config_early(cfg: DictConfig, task: str = "train") -> None:
    """The checks that need no torch, Lightning or data: what a typo usually breaks, in about a second."""
    check_missing(cfg)
    check_experiment_task(cfg, task)
    if task != "train":
        return
    seed = cfg.get("seed")
    if seed is not None:
        _number(cfg, "seed")
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
    if str(cfg.data.get("_target_", "")).endswith("SyntheticFaceDataModule") and cfg.data.get("sampler") != "random":
        p, ids, world = int(cfg.data.p), _number(cfg, "data.train_identities", required=False), _devices(cfg)
        _require(
            ids is None or p * world <= ids,
            f"data.p={p}{f' x {world} processes' if world > 1 else ''} identities per batch, but the built-in data "
            f"has data.train_identities={ids}: lower data.p, or raise data.train_identities",
        )
    _number(cfg, "data.extra_negatives", int, required=False)
    size = _number(cfg, "backbone.input_size")
    _require(size >= 16, f"backbone.input_size must be >= 16, got {size}")
    lr = _number(cfg, "optimizer.lr", float, required=False)
    _require(lr is None or lr >= 0, f"optimizer.lr must be >= 0 (0 keeps the weights as they are), got {lr}")
    wd = _number(cfg, "optimizer.weight_decay", float, required=False)
    _require(wd is None or wd >= 0, f"optimizer.weight_decay must be >= 0, got {wd}")
    _number(cfg, "model.max_abs_weight", float, required=False)
    _check_trainer(cfg)


def check_config(cfg: DictConfig) -> None:
    """Validate the values every run depends on: :func:`check_config_early`, then what needs torch's libraries."""
    from facenet_pl.data.images import FIT_MODES
    from facenet_pl.mining import MINERS
    from facenet_pl.training.guards import parse_guard_every
    from facenet_pl.training.schedulers import check_scheduler

    check_config_early(cfg)
    backbone = cfg.backbone
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
    if cfg.get("scheduler"):
        check_scheduler(OmegaConf.to_container(cfg.scheduler, resolve=True))
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
