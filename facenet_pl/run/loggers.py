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
            _write_rows(self.metrics_file_path, self.metrics_keys, kept)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        """New metric names (the test phase's ``test/*``): the file is rewritten with the wider header whole or not
        at all (Lightning's writer truncates it in place, so a kill or a full disk then loses the run's history)."""
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        _write_rows(self.metrics_file_path, fieldnames, rows)


def _write_rows(path: str, fieldnames: list[str], rows: list[dict]) -> None:
    """``path`` as a CSV of ``rows`` under ``fieldnames``, replaced whole
    (:func:`~facenet_pl.utils.fileio.atomic_output`)."""
    from facenet_pl.utils.fileio import atomic_output

    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames)
        w.writeheader()
        w.writerows(rows)


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
