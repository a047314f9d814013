"""The ``scheduler`` group: any ``_target_`` class with linear warm-up, checked against the closed-form schedule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from facenet_pl.training.schedulers import build_scheduler, check_scheduler
from facenet_pl.utils.errors import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf" / "scheduler"


def _lrs(cfg: dict | None, total: int, lr: float = 0.1) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = build_scheduler(cfg, opt, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


def _yaml(name: str, **changes) -> dict:
    return {**OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml")), **changes}


def test_cosine_with_warmup_matches_the_formula():
    total, warmup, lr, start, ratio = 20, 4, 0.1, 0.01, 0.01
    got = _lrs(_yaml("cosine", warmup_steps=warmup), total, lr)
    eta_min, t_max = lr * ratio, total - warmup
    want = [lr * (start + (1 - start) * t / warmup) for t in range(warmup)]
    want += [eta_min + (lr - eta_min) * (1 + math.cos(math.pi * t / t_max)) / 2 for t in range(total - warmup)]
    assert got == pytest.approx(want, rel=1e-6)


def test_step_and_none():
    assert _lrs(_yaml("step", step_size=3, gamma=0.5), 7, 0.1) == pytest.approx(
        [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]
    )
    assert _lrs(_yaml("none"), 5) == [0.1] * 5


def test_a_bad_scheduler_class_is_one_line_before_training():
    with pytest.raises(ConfigError, match="scheduler._target_='torch.optim.lr_scheduler.NoSuchLR'"):
        check_scheduler({"_target_": "torch.optim.lr_scheduler.NoSuchLR"})
    with pytest.raises(ConfigError, match="not an LR scheduler"):
        check_scheduler({"_target_": "torch.optim.SGD"})


def test_any_scheduler_class_from_the_command_line_through_trainer_fit(tmp_path):
    """``scheduler._target_=...ExponentialLR +scheduler.gamma=0.9``: no code, and the Trainer steps it every
    optimisation step (the checkpoint's scheduler state holds lr x 0.9^steps)."""
    from ..helpers import train_in_process

    train_in_process(
        tmp_path,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "optimizer.lr=0.01",
        "scheduler=none",
        "scheduler._target_=torch.optim.lr_scheduler.ExponentialLR",
        "+scheduler.gamma=0.9",
    )
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    assert ckpt["lr_schedulers"][0]["_last_lr"][0] == pytest.approx(0.01 * 0.9**3)
