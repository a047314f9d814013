"""Lightning callbacks of facenet-pl."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the weights and loop state after the last completed step, whatever the metrics say.

    Lightning's ``ModelCheckpoint(save_last=True)`` (2.6) rewrites ``last.ckpt`` only at steps where it
    also saved a top-k checkpoint, so with ``save_top_k=1`` it stays at the best epoch. This one writes
    ``<dirpath>/last.ckpt`` at the end of every training epoch (after that epoch's validation, so the
    threshold travels with it), every ``every_n_train_steps`` steps or ``train_time_interval`` if set
    (a mid-epoch checkpoint: resuming continues after its last batch), and when training is
    interrupted (Ctrl-C, SIGTERM). A failure such as a non-finite loss does not overwrite it: the
    previous ``last.ckpt`` is the last good state.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        save_on_interrupt: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=self.CHECKPOINT_NAME_LAST,
            monitor=None,
            save_top_k=1,
            save_last=False,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
            **kwargs,
        )
        self.save_on_interrupt = save_on_interrupt

    @property
    def state_key(self) -> str:
        return self._generate_state_key(role="last", every_n_train_steps=self._every_n_train_steps)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if not self.save_on_interrupt or not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return
        if trainer.fast_dev_run or trainer.sanity_checking or self._last_global_step_saved == trainer.global_step:
            return
        path = self.format_checkpoint_name(self._monitor_candidates(trainer))
        self._save_checkpoint(trainer, path)
        log.warning("training interrupted at step %d: saved %s (resume with ckpt_path=last)", trainer.global_step, path)
