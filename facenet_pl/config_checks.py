"""Cheap checks of a composed config, run before any data is generated or model built.

Each error names the config key, what is wrong and what is allowed.
"""

from __future__ import annotations

from omegaconf import DictConfig

from facenet_pl.errors import ConfigError
from facenet_pl.mining import MINERS


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def check_config(cfg: DictConfig) -> None:
    """Validate the values every run depends on."""
    loss, data, model, backbone = cfg.loss, cfg.data, cfg.model, cfg.backbone
    _require(float(loss.get("margin", 0.2)) >= 0, f"loss.margin must be >= 0, got {loss.margin}")
    _require(int(model.embedding_dim) >= 1, f"model.embedding_dim must be >= 1, got {model.embedding_dim}")
    _require(int(data.k) >= 2, f"data.k (images per identity) must be >= 2, got {data.k}")
    _require(int(data.p) >= 1, f"data.p (identities per batch) must be >= 1, got {data.p}")
    _require(int(backbone.input_size) >= 16, f"backbone.input_size must be >= 16, got {backbone.input_size}")
    name = str(backbone.name)
    import timm

    import facenet_pl.models  # noqa: F401  (registers facenet_small)

    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=6, cutoff=0.6)
        raise ConfigError(
            f"backbone.name={name!r} is not a timm model"
            + (f" (close: {', '.join(close)})" if close else "")
            + "; use backbone=<inception|inception_resnet_v2|resnet18|resnet50|mobilenetv3|small> or any "
            "name from timm.list_models()"
        )
    target = str(cfg.miner.get("_target_", ""))
    known = {f"facenet_pl.mining.{c.__name__}" for c in MINERS.values()}
    _require(
        target in known or "." in target,
        f"miner._target_={target!r} is not a miner; use miner=<{'|'.join(MINERS)}>",
    )
    offline = cfg.miner.get("offline") or {}
    every = int(offline.get("every_n_steps") or 0)
    _require(every >= 0, f"miner.offline.every_n_steps must be >= 0 (0 = online mining), got {every}")
    if every:
        for key in ("subset_identities", "images_per_identity"):
            _require(int(offline.get(key, 2)) >= 2, f"miner.offline.{key} must be >= 2, got {offline.get(key)}")
        _require(not (cfg.get("mining") or {}).get("cross_rank", False),
                 "miner.offline.every_n_steps > 0 and mining.cross_rank=true do not combine (offline triplets are "
                 "mined per rank); set one of them off")
