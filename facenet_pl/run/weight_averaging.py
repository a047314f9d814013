"""``callbacks=ema``: an exponential moving average of the weights, validated, checkpointed and tested as one model.

Built on Lightning's ``EMAWeightAveraging`` (the averaged copy, swapped in for validation, saved as the checkpoint's
``state_dict`` with the raw weights beside it, restored on resume), with these changes:

- Lightning's callback restores the *raw* weights whenever a checkpoint is loaded while it holds an average, so
  ``train.py``'s test of the best checkpoint would score the raw weights at the threshold the averaged ones were
  validated with (a silently wrong test figure: 50% on the built-in data, where those weights score 93% at a
  threshold fit on the test folds). Here a checkpoint loaded to test or predict keeps its ``state_dict``: the
  averaged weights that validation picked.
- Only parameters and normalisation statistics are averaged and swapped; the module's validation threshold is not
  a weight (Lightning's copy averaged it with them).
- The averaged copy is made when fitting starts, after the module's ``setup`` (which may add parameters), not in
  the callback's ``setup``, which Lightning runs first.
- The update is one in-place ``lerp`` per tensor, with no host sync: ``torch.optim.swa_utils.AveragedModel`` reads its
  ``n_averaged`` counter on the host every step (``if n_averaged == 0``), which on a GPU waits for the step.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.trainer.states import TrainerFn

from facenet_pl.utils.errors import ConfigError


class EMAWeights(EMAWeightAveraging):
    """Exponential moving average of every parameter and normalisation statistic, ``avg = decay * avg + (1 - decay)
    * w`` after each optimiser step from ``update_starting_at_step`` on (the first update copies the weights).
    ``decay`` 0.999 averages about the last 1,000 steps."""

    def __init__(self, decay: float, update_every_n_steps: int = 1, update_starting_at_step: int | None = None) -> None:
        if not 0.0 <= float(decay) < 1.0:
            raise ConfigError(
                f"callbacks.ema.decay={decay}: give a number in [0, 1), the weight the average keeps each step "
                "(0.999 averages about the last 1,000 steps)"
            )
        if int(update_every_n_steps) < 1:
            raise ConfigError(f"callbacks.ema.update_every_n_steps={update_every_n_steps}: give 1 or more")
        super().__init__(
            decay=decay, update_every_n_steps=update_every_n_steps, update_starting_at_step=update_starting_at_step
        )
        self.decay = float(decay)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Nothing yet: Lightning runs the module's ``setup`` after the callbacks', and it may add parameters (the
        ArcFace class weights of ``loss=triplet_arcface`` are sized by the data there). The averaged copy is made when
        fitting starts, or when a resumed fit restores it."""

    def _build(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._average_model is None:
            super().setup(trainer, pl_module, "fit")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._build(trainer, pl_module)

    @staticmethod
    def averaged(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """What is averaged, by ``state_dict`` name: every parameter and the normalisation layers' running
        statistics. Other buffers are not weights: the module's validation threshold stays the live module's, set by
        the validation that scored the average (Lightning runs the module's epoch-end hook after the callbacks')."""
        norm = {n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)}
        out = dict(model.named_parameters())
        out.update({n: b for n, b in model.named_buffers() if n.rpartition(".")[0] in norm})
        return out

    def _pairs(self, pl_module: pl.LightningModule) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The averaged and the current tensors, in the same order (listed once: every step updates them in place)."""
        assert self._average_model is not None
        if getattr(self, "_pair_lists", None) is None:
            avg, cur = self.averaged(self._average_model.module), self.averaged(pl_module)
            a_all, c_all = [avg[n] for n in cur], list(cur.values())
            self._pair_lists = (a_all, c_all)
            f = [a.is_floating_point() for a in a_all]  # averaged; the rest (counters) copied
            self._split = (
                [a for a, k in zip(a_all, f) if k],
                [c for c, k in zip(c_all, f) if k],
                [a for a, k in zip(a_all, f) if not k],
                [c for c, k in zip(c_all, f) if not k],
            )
        return self._pair_lists

    @torch.no_grad()
    def update(self, pl_module: pl.LightningModule, first: bool) -> None:
        """Fold the module's current weights into the average (copy them on the first update)."""
        avg, cur = self._pairs(pl_module)
        if first:
            torch._foreach_copy_(avg, cur)
            return
        avg_f, cur_f, avg_i, cur_i = self._split
        torch._foreach_copy_(avg_i, cur_i)  # counters (BatchNorm's num_batches_tracked): the value
        if avg_f:
            torch._foreach_lerp_(avg_f, cur_f, 1.0 - self.decay)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step_idx = trainer.global_step - 1  # global_step counts optimiser steps taken, 1 after the first
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=step_idx):
            self.update(pl_module, first=self._latest_update_step == 0)
            self._latest_update_step = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Updated after steps only (Lightning's class may also update at epoch ends)."""

    def _swap_models(self, pl_module: pl.LightningModule) -> None:
        """Validation scores the average: swap the averaged tensors in (and back out), nothing else."""
        for a, c in zip(*self._pairs(pl_module)):
            tmp = a.detach().clone()
            a.data.copy_(c.data)
            c.data.copy_(tmp)

    def _copy_average_to_current(self, pl_module: pl.LightningModule) -> None:
        """At the end of training the module becomes the average (its threshold is already the average's)."""
        for a, c in zip(*self._pairs(pl_module)):
            c.data.copy_(a.data)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """The checkpoint's ``state_dict`` is the average, with the live module's other buffers (the threshold its
        validation set); the raw weights go to ``current_model_state`` to resume with."""
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._average_model is not None:
            averaged = self.averaged(pl_module)
            for name, value in pl_module.state_dict().items():
                if name not in averaged:
                    checkpoint["state_dict"][name] = value

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """Resuming a fit restores both the average and the raw weights; testing or predicting from a checkpoint
        keeps its ``state_dict``, the averaged weights (Lightning's class would put the raw ones back)."""
        if trainer.state.fn == TrainerFn.FITTING:
            self._build(trainer, pl_module)
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
