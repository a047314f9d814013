"""LR schedulers from the ``scheduler`` config group: any ``_target_`` class, plus linear warm-up."""

from __future__ import annotations

import math

import torch
from hydra.utils import get_class, instantiate

from facenet_pl.utils.errors import ConfigError


def scheduler_config(cfg: dict | None) -> dict | None:
    """The ``scheduler`` group as a plain dict with ``_target_`` (None: constant LR)."""
    cfg = dict(cfg or {})
    if not cfg.get("_target_"):
        return None
    cfg["_partial_"] = True
    return cfg


def build_scheduler(cfg: dict | None, optimizer: torch.optim.Optimizer, total_steps: int):
    """The configured scheduler on ``optimizer`` for a run of ``total_steps`` optimisation steps: ``warmup_steps``
    of linear warm-up (from ``warmup_start_factor`` x lr), then the ``_target_`` class; ``min_lr_ratio`` becomes
    ``eta_min`` (lr x ratio) and a ``total_steps`` value the steps after warm-up. None: constant LR."""
    sched = scheduler_config(cfg)
    if sched is None:
        return None
    warmup = min(int(sched.pop("warmup_steps", 0) or 0), max(total_steps - 1, 0))
    start_factor = sched.pop("warmup_start_factor", 0.01)
    min_lr_ratio = sched.pop("min_lr_ratio", None)
    if min_lr_ratio is not None:
        sched["eta_min"] = optimizer.defaults.get("lr", 1e-3) * min_lr_ratio
    sched = {k: max(total_steps - warmup, 1) if v == "total_steps" else v for k, v in sched.items()}
    main = instantiate(sched)(optimizer)
    if warmup > 0:
        ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=start_factor, total_iters=warmup)
        main = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
    return main


def check_scheduler(cfg: dict | None) -> None:
    """Fail before any data is read if the scheduler class cannot be imported."""
    sched = scheduler_config(cfg)
    if sched is None:
        return
    try:
        cls = get_class(sched["_target_"])
    except Exception as e:  # noqa: BLE001
        raise ConfigError(
            f"scheduler._target_={sched['_target_']!r} cannot be imported ({str(e).splitlines()[0]}); "
            "use scheduler=<cosine|step|none> or a torch.optim.lr_scheduler class"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.lr_scheduler.LRScheduler)):
        raise ConfigError(f"scheduler._target_={sched['_target_']!r} is not an LR scheduler class")


def total_training_steps(trainer) -> int:
    """Optimiser steps the run will take (for the LR schedule), like ``trainer.estimated_stepping_batches``.

    That property makes Lightning build the train loader's iterator before a checkpoint is restored,
    so a resumed run would start from the first batch of epoch 0; counting the datamodule's batches
    leaves the loader to be built after the restore.
    """
    t = trainer
    per_epoch = getattr(t.datamodule, "train_batches_per_epoch", None)
    if per_epoch is None:
        return int(t.estimated_stepping_batches)
    if t.max_epochs == -1 and t.max_steps == -1:
        raise ConfigError(
            "trainer.max_epochs=-1 with trainer.max_steps=-1 trains forever: the LR schedule "
            "needs an end. Set one of them, or scheduler=none."
        )
    if t.max_epochs == -1:
        return int(t.max_steps)
    n, limit = per_epoch(), t.limit_train_batches
    n = int(n * limit) if isinstance(limit, float) else min(n, int(limit))
    steps = math.ceil(n / t.accumulate_grad_batches) * max(t.max_epochs or 1, 1)
    return min(steps, t.max_steps) if t.max_steps != -1 else steps


def build_optimization(optimizer: dict, scheduler: dict | None, groups: list[dict], trainer):
    """What ``configure_optimizers`` returns: the ``optimizer`` config over ``groups`` (plain dicts), with the
    ``scheduler`` config stepped every training step over the run's steps when there is one."""
    opt = instantiate(dict(optimizer), _partial_=True)(params=groups)
    if scheduler_config(scheduler) is None:
        return opt
    main = build_scheduler(scheduler, opt, total_training_steps(trainer))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": main, "interval": "step"}}
