"""Config values as plain Python: what a checkpoint stores and a class is given."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def plain(cfg: Any) -> Any:
    """DictConfig -> plain containers (resolved), so checkpoints hold no OmegaConf objects; anything else as is."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
