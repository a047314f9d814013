"""Resuming continues the same run: its own config, with only the settings that may change taken from the
resume command line, and every other difference refused in one line.

A checkpoint carries the config its run was composed with (unresolved, without Hydra's node). On resume,
:func:`resume_config` starts from that config: a key the resume command line does not name keeps the run's value
(``python train.py hydra.run.dir=<run> ckpt_path=last`` continues a 3-epoch run for 3 epochs, not the default
12); a key it names is taken when it is in :data:`MAY_CHANGE` (extend the run, other devices, loggers, loaders)
and refused otherwise (``seed``, the data, the network, the loss: they would make another run); callbacks come
from the resume command line as composed. ``_target_`` values restored from a checkpoint must name classes of the
libraries the configs use, so a handed checkpoint cannot make a resume instantiate anything else.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from facenet_pl.utils.errors import ConfigError

log = logging.getLogger(__name__)

#: Keys (and subtrees) a resume command line may change: the length of the run, where and how it runs, what it
#: logs and prints, how data is loaded, where files go. Everything else would be another run.
MAY_CHANGE = (
    "ckpt_path",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.devices",
    "trainer.accelerator",
    "trainer.num_nodes",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "logger",
    "data.num_workers",
    "data.decode_workers",
    "data.prefetch_factor",
    "data.pin_memory",
    "data.cache_dir",
    "paths",
    "extras",
    "tags",
    "test",
)
#: Keys that describe this process, not the run: never restored, never compared. Callbacks observe and checkpoint
#: a run without changing what it computes: they come from the resume command line as composed.
_RUNTIME = ("paths", "ckpt_path", "hydra", "extras", "tags", "task_name", "callbacks")
#: Classes a ``_target_`` restored from a checkpoint may name (what this project's configs instantiate).
RESTORABLE_TARGETS = (
    "facenet_pl.",
    "torch.optim.",
    "timm.",
    "kornia.augmentation.",
    "pytorch_lightning.callbacks.",
    "pytorch_lightning.loggers.",
    "pytorch_lightning.Trainer",
)


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """What a checkpoint stores: the composed config, unresolved, without Hydra's node."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    return {k: v for k, v in plain.items() if k != "hydra"}


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def _under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def command_line_keys(overrides: list[str]) -> list[str]:
    """The keys or groups Hydra overrides name (``trainer.max_epochs=6`` -> ``trainer.max_epochs``;
    ``logger=wandb`` -> ``logger``; ``+data.x=1`` -> ``data.x``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))]


def _current_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # no Hydra context (a config built by hand): nothing was named on a command line
        return []


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def resume_config(cfg: DictConfig, stored: dict[str, Any] | None, ckpt_path: str) -> DictConfig:
    """The config a resumed run continues with (see the module docstring); ``stored``: the checkpoint's."""
    if stored is None:
        log.warning(
            "%s holds no run config (a checkpoint from before 2026-11-30): resuming with this command line's "
            "config as it is; make sure it is the one the run was started with",
            ckpt_path,
        )
        return cfg
    if not isinstance(stored, dict):
        raise ConfigError(f"{ckpt_path}: its stored run config is a {type(stored).__name__}, not a mapping")
    new = run_config(cfg)
    named = command_line_keys(_current_overrides())
    theirs, ours = _leaves(stored), _leaves(new)
    merged = dict(ours)
    refused, changed = [], []
    for key in sorted(set(theirs) | set(ours)):
        if _under(key, _RUNTIME):
            continue
        if key in theirs and key in ours and theirs[key] == ours[key]:
            continue
        if _under(key, named):
            if _under(key, MAY_CHANGE):
                changed.append(key)
                continue
            refused.append(f"{key}={_show(ours.get(key))} (the run's: {_show(theirs.get(key, '<not set>'))})")
            continue
        if key not in theirs:  # a key this version of the configs has and the run's did not: keep it
            continue
        value = theirs[key]
        if key.endswith("_target_") and not (isinstance(value, str) and value.startswith(RESTORABLE_TARGETS)):
            refused.append(f"{key}={_show(value)} in the checkpoint is not a class a resume may instantiate")
            continue
        merged[key] = value
    if refused:
        raise ConfigError(
            f"resuming {ckpt_path} with settings the run was not started with: {'; '.join(refused)}. A resumed "
            "run continues the same run (start a new run for other settings); on resume only "
            f"{', '.join(MAY_CHANGE[1:])} and callbacks may change"
        )
    out: dict[str, Any] = {}
    for key, value in merged.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    restored = OmegaConf.create(out)
    if "max_epochs" in str(changed) or "max_steps" in str(changed):
        log.warning(
            "resume changes %s: the learning-rate schedule is laid out again over the new length from this step",
            ", ".join(k for k in changed if k.startswith("trainer.max_")),
        )
    if changed:
        log.info("resume: %s taken from the command line; everything else as the run was started", ", ".join(changed))
    return restored
