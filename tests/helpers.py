"""Test helpers importable from Hydra configs (``+callbacks.x._target_=tests.helpers.X``)."""

from __future__ import annotations

import torch
from pytorch_lightning.callbacks import Callback


class InjectNaNWeights(Callback):
    """Fault injection: poison the weights at ``step`` so the loss becomes NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.net.head.weight.fill_(float("nan"))
