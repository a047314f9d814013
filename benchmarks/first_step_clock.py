"""A callback for bench_first_step.py: when did the first training step start and end (wall-clock)?"""

from __future__ import annotations

import json
import os
import time

from pytorch_lightning.callbacks import Callback


class FirstStepClock(Callback):
    """Writes ``{"start": t, "end": t}`` (``time.time()``) of the first training batch to ``path``;
    ``exit_after``: end the process right after it (the benchmark needs nothing more)."""

    def __init__(self, path: str, exit_after: bool = False) -> None:
        self.path, self.exit_after, self.start = path, exit_after, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.start is None:
            self.start = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 1:
            with open(self.path, "w") as f:
                json.dump({"start": self.start, "end": time.time()}, f)
            if self.exit_after:
                os._exit(0)
