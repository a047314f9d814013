"""Training guards that never make the device wait: a non-finite loss, diverged weights, embedding collapse.

Each step records on the device (no host read): whether its loss was finite, the largest |value| of every weight
and floating buffer after its update (one fused ``torch._foreach_norm`` over all of them: a handful of kernels, not
two per tensor), and the batch's embedding spread. The host reads the record in one transfer every
``model.guard_every_n_steps`` steps (before that step's update) and before every checkpoint is written. So a
non-finite loss or a diverged weight stops training within N steps (with N = 1, before the bad step's update), the
message names the first bad step, and no checkpoint holds weights from after it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from facenet_pl.utils.errors import ConfigError
from facenet_pl.utils.settings import ModelSettings

log = logging.getLogger(__name__)

#: A weight or BatchNorm statistic larger than this in magnitude means training diverged (``model.max_abs_weight``).
MAX_ABS_WEIGHT = ModelSettings.max_abs_weight  # model.max_abs_weight's default
#: ``model.guard_every_n_steps=auto``: every step on a CPU (a read costs nothing there), else every this many.
GUARD_EVERY_ON_ACCELERATOR = 50


class NonFiniteLossError(FloatingPointError, ConfigError):
    """The loss became NaN or inf; training stops before the optimiser step spoils the weights."""


class DivergedWeightsError(NonFiniteLossError):
    """A weight or BatchNorm statistic is NaN, inf or exploding: training stops, nothing of it is checkpointed."""


def guarded_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """The floating, non-empty tensors of ``named`` the guards watch (the stored threshold may be NaN)."""
    return [(n, t.detach()) for n, t in named if t.is_floating_point() and t.numel() and not n.endswith("threshold")]


def _worst(tensors: list[torch.Tensor]) -> torch.Tensor:
    """max |value| of each tensor, as one float32 vector (NaN where a tensor holds NaN). On CUDA one fused
    multi-tensor ``_foreach_norm(inf)`` (a few kernels for all tensors); on a CPU, where kernel launches cost
    nothing and that op falls back to a slower per-tensor path (73 ms against 12 ms for inception_v3,
    benchmarks/bench_guards.py), one ``abs().amax()`` per tensor."""
    if tensors[0].is_cuda:
        return torch.stack(torch._foreach_norm(tensors, float("inf"), dtype=torch.float32))
    return torch.stack([t.abs().amax().float() for t in tensors])


def diverged_tensor(named: Any, limit: float = MAX_ABS_WEIGHT) -> tuple[str, float] | None:
    """``(name, max |value|)`` of the first tensor of ``named`` ((name, tensor) pairs) that is not finite or exceeds
    ``limit``; None when all are fine. Reads the result on the host: for checkpoint writes, not for every step."""
    items = guarded_tensors(named)
    if not items:
        return None
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(items):
        by_device.setdefault(t.device, []).append(i)
    worst = torch.empty(len(items))
    for rows in by_device.values():
        worst[rows] = _worst([items[i][1] for i in rows]).cpu()
    bad = ~torch.isfinite(worst) | (worst > limit)
    if not bad.any():
        return None
    i = int(bad.nonzero()[0])
    return items[i][0], float(worst[i])


@dataclass
class GuardReading:
    """What the guards recorded, read on the host: the first bad step (-1: none), what was bad there (``loss``
    or the name of a tensor) and its value, and the last step's embedding statistics."""

    bad_step: int
    bad_what: str
    bad_value: float
    spread: float
    spread_max: float
    d_an: float
    d_ap: float


class TrainingGuards:
    """The device-side record of :mod:`facenet_pl.training.guards` for one module's tensors; :meth:`read` is the only
    host read (one transfer)."""

    def __init__(self, device: torch.device, limit: float, spread_max: float = 0.0) -> None:
        self.device, self.limit = device, float(limit)
        #: first bad step, what (0: loss, 1: a tensor), the tensor's index; -1 when nothing was bad
        self.first = torch.full((3,), -1, dtype=torch.long, device=device)
        self.value = torch.zeros((), dtype=torch.float32, device=device)
        #: last spread, largest spread, last mean d(a,n), last mean d(a,p)
        self.stats = torch.tensor([float("nan"), spread_max, float("nan"), float("nan")], device=device)
        self.names: list[str] = []
        self.reads = 0
        #: Steps between host reads (``model.guard_every_n_steps`` resolved for the device; set by the module).
        self.every = 1

    def _record(self, bad: torch.Tensor, step: int, kind: int, index: torch.Tensor, value: torch.Tensor) -> None:
        first = bad & (self.first[0] < 0)
        new = torch.stack(
            [
                torch.full((), step, dtype=torch.long, device=self.device),  # a fill kernel, not a host copy
                torch.full((), kind, dtype=torch.long, device=self.device),
                index.to(torch.long),
            ]
        )
        self.first = torch.where(first, new, self.first)
        self.value = torch.where(first, value.float(), self.value)

    def note_loss(self, loss: torch.Tensor, step: int) -> None:
        """Record whether this step's loss is finite."""
        loss = loss.detach()
        minus_one = torch.full((), -1, dtype=torch.long, device=self.device)
        self._record(~torch.isfinite(loss), step, 0, minus_one, loss)

    def note_tensors(self, named: Iterable[tuple[str, torch.Tensor]], step: int) -> None:
        """Record whether any weight or floating buffer is NaN, inf or beyond the limit after step ``step``."""
        items = guarded_tensors(named)
        if not items:
            return
        self.names = [n for n, _ in items]
        worst = _worst([t for _, t in items]).to(self.device)
        bad = ~torch.isfinite(worst) | (worst > self.limit)
        i = torch.argmax(bad.to(torch.uint8))  # the first bad one (argmax returns the first maximum)
        self._record(bad.any(), step, 1, i, worst.index_select(0, i.view(1)).squeeze(0))  # (worst[i]: a host read)

    def note_batch(self, spread: torch.Tensor, d_an: torch.Tensor, d_ap: torch.Tensor) -> None:
        """Record the batch's embedding spread and mined distances (for the collapse warning)."""
        spread = spread.detach().float()
        self.stats = torch.stack(
            [spread, torch.maximum(self.stats[1], spread), d_an.detach().float(), d_ap.detach().float()]
        )

    def read(self) -> GuardReading:
        """Everything recorded, in one device-to-host transfer."""
        self.reads += 1
        vals = torch.cat([self.first.double(), self.value.double().view(1), self.stats.double()]).cpu().tolist()
        step, kind, index = int(vals[0]), int(vals[1]), int(vals[2])
        what = "loss" if kind == 0 else (self.names[index] if 0 <= index < len(self.names) else f"tensor {index}")
        return GuardReading(step, what if step >= 0 else "", vals[3], *vals[4:8])

    def check(self, step: int, when: str = "") -> GuardReading:
        """:meth:`read`, then stop if a loss was non-finite or a weight diverged since the run began. ``step``: the
        trainer's step now; ``when``: what the read is for, e.g. " (the checkpoint was not written)"."""
        r = self.read()
        if r.bad_step >= 0 and r.bad_what == "loss":
            stopped = (
                "training stopped before this step's update"
                if r.bad_step == step
                else f"training stopped at step {step}; no checkpoint holds weights from that step on"
            )
            raise NonFiniteLossError(
                f"non-finite loss ({r.bad_value}) at step {r.bad_step}: {stopped}{when}. Lower optimizer.lr, set "
                "trainer.gradient_clip_val, or check the inputs."
            )
        if r.bad_step >= 0:
            raise DivergedWeightsError(
                f"training diverged at step {r.bad_step}: {r.bad_what} reached |value| {r.bad_value:.3g} (limit "
                f"model.max_abs_weight={self.limit:g}); nothing from this point is checkpointed{when}. Lower "
                "optimizer.lr, set trainer.gradient_clip_val, or use a scheduler with warm-up."
            )
        return r


def check_finite_distances(distances: Any, stage: str, step: int) -> None:
    """Stop when a validation or test pair distance is NaN or inf: the network's outputs diverged."""
    d = np.asarray(distances)
    if not np.isfinite(d).all():
        raise DivergedWeightsError(
            f"{stage}: {int((~np.isfinite(d)).sum())} of {len(d)} pair distances are NaN or inf at step {step}: the "
            "network's outputs diverged. Lower optimizer.lr or set trainer.gradient_clip_val."
        )


def guard_every(setting: int | str, device: torch.device) -> int:
    """``model.guard_every_n_steps``: a number >= 1, or ``auto`` (1 on a CPU, :data:`GUARD_EVERY_ON_ACCELERATOR`
    on a GPU or other accelerator, where each read makes the host wait for the device)."""
    n = parse_guard_every(setting)
    if n is None:
        return 1 if device.type == "cpu" else GUARD_EVERY_ON_ACCELERATOR
    return n


def parse_guard_every(setting: int | str) -> int | None:
    """``model.guard_every_n_steps`` checked: the number, or None for ``auto``; ConfigError otherwise."""
    if isinstance(setting, str) and setting.strip().lower() == "auto":
        return None
    try:
        n = int(setting)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(setting).strip() != str(n):
        raise ConfigError(f"model.guard_every_n_steps={setting!r}: a whole number >= 1, or auto")
    return n


#: Squared distance under which every embedding counts as the same point (unit vectors: max 4).
COLLAPSE_DISTANCE = 1e-4
#: Collapse: the batch's mean pairwise squared distance fell below this fraction of the largest seen in the run.
COLLAPSE_RATIO = 0.02
#: ... or below this larger fraction while the mined triplets' distances are all inside a tenth of the margin (the
#: loss then sits at the margin: d(a,p) ~ d(a,n) ~ 0), as hardest negatives at a high learning rate do.
COLLAPSE_RATIO_AT_MARGIN, COLLAPSE_MARGIN_FRACTION = 0.10, 0.1


@dataclass
class CollapseWatch:
    """Warns (once per 100 steps) when the embeddings converge to one point, f(x) = const: the batch's mean pairwise
    squared distance (``train/spread``; 2 for random unit vectors) falls below ``COLLAPSE_RATIO`` of the largest this
    run has had (``spread_max``, kept in checkpoints), or below ``COLLAPSE_DISTANCE``; or below
    ``COLLAPSE_RATIO_AT_MARGIN`` of it while the mined d(a,p) and d(a,n) (NaN: no triplet) are both under a tenth of
    the margin (every triplet's loss at the margin)."""

    spread_max: float = 0.0
    warnings: int = 0
    next_warning: int = 0

    def check(
        self,
        step: int,
        spread: float,
        d_an: float,
        d_ap: float,
        margin: float | None,
        classifier: str | None = None,
        triplets: bool = True,
    ) -> None:
        """Judge one batch; ``classifier``: the classification loss's name, if any, and ``triplets``: whether a
        triplet loss is part of it (they choose the advice)."""
        if not math.isfinite(spread):
            return
        self.spread_max = max(self.spread_max, spread)
        if step < self.next_warning:
            return
        inside = COLLAPSE_MARGIN_FRACTION * float(margin) if margin is not None else float("nan")
        at_margin = d_an < inside and d_ap < inside and spread < COLLAPSE_RATIO_AT_MARGIN * self.spread_max
        if spread < max(COLLAPSE_DISTANCE, COLLAPSE_RATIO * self.spread_max) or at_margin:
            log.warning(
                "embedding collapse at step %d: the batch's mean squared distance is %.2e, %.1f%% of this run's "
                "largest (%.2e); mined d(a,n)=%.2e, d(a,p)=%.2e. The model is mapping every face to one point%s",
                step,
                spread,
                100 * spread / max(self.spread_max, 1e-12),
                self.spread_max,
                d_an,
                d_ap,
                collapse_advice(classifier, triplets),
            )
            self.warnings += 1
            self.next_warning = step + 100


def collapse_advice(classifier: str | None, triplets: bool) -> str:
    """What to change, for this run's loss: every suggestion is one the run's config accepts (a classification loss
    refuses miner=...)."""
    if classifier is None:
        return (
            " (the paper's warning about hardest negatives). Try miner=semihard, a lower optimizer.lr, or a larger "
            "loss.margin."
        )
    if not triplets:
        return (
            f". loss={classifier} packs the embeddings into a narrow cone when each training person is "
            "seen few times (docs/losses.md): use loss=triplet_arcface (the triplet loss plus ArcFace at weight "
            "0.01), more images per person, or a lower optimizer.lr."
        )
    return (
        f" (hardest negatives, or the {classifier} part at too large a weight packing the embeddings "
        "into a narrow cone). Try a lower loss.classification_weight (0.01, the default, did better than 1; "
        "docs/losses.md), miner=semihard, or a lower optimizer.lr."
    )
