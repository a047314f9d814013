"""Loggers: a CSV logger that continues its file when a run is resumed instead of deleting it."""

from __future__ import annotations

import csv
import os

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class AppendingExperimentWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` (Lightning's writer deletes it) and appends to it; rows logged at or
    after ``resume_step`` are dropped (the resumed run trains and logs those steps again)."""

    def __init__(self, log_dir: str, resume_step: int | None = None) -> None:
        self.resume_step = -1 if resume_step is None else int(resume_step)
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as f:
            reader = csv.DictReader(f)
            self.metrics_keys = list(reader.fieldnames or [])
            rows = list(reader)
        resume_step = self.resume_step
        kept = [r for r in rows if resume_step < 0 or not r.get("step") or int(float(r["step"])) < resume_step]
        if len(kept) != len(rows):
            with open(self.metrics_file_path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.metrics_keys)
                w.writeheader()
                w.writerows(kept)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``metrics.csv``: a resumed run keeps its history.

    ``resume_step`` (set by ``train`` when resuming, before anything is logged): the checkpoint's step.
    """

    resume_step: int | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir, resume_step=self.resume_step)
        return self._experiment
