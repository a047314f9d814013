"""Lightning callbacks of facenet-pl."""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from facenet_pl.utils.errors import ConfigError

log = logging.getLogger(__name__)


class _FlopsCounted:
    """Lightning's layer table, its "Total FLOPs" line counted on one image at the network's input size.

    Lightning counts FLOPs only by running ``example_input_array``, which the module does not set (a compiled
    network would be compiled again for a batch of one): it printed 0. Here they are counted like
    ``model/macs_per_image`` in metrics.json (:func:`~facenet_pl.models.complexity.model_complexity`, a copy in
    eval mode), as 2 FLOPs per multiply-add, and a line says both.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from pytorch_lightning.utilities.model_summary import get_human_readable_count

        from facenet_pl.models.complexity import model_complexity

        if not self._max_depth or not trainer.is_global_zero:
            return
        summary = self._summary(trainer, pl_module)
        net = getattr(pl_module.net, "_orig_mod", pl_module.net)
        macs = model_complexity(net, pl_module.input_size)["model/macs_per_image"]
        self.summarize(
            summary._get_summary_data(),
            summary.total_parameters,
            summary.trainable_parameters,
            summary.model_size,
            summary.total_training_modes,
            total_flops=int(2 * macs),
            **self._summarize_kwargs,
        )
        log.info(
            "per %d px image: %s multiply-adds = %s FLOPs (the table's total; metrics.json: model/macs_per_image)",
            pl_module.input_size,
            get_human_readable_count(int(macs)),
            get_human_readable_count(int(2 * macs)),
        )


class ModelSummary(_FlopsCounted, pl.callbacks.ModelSummary):
    """Lightning's plain-text model summary with its FLOPs counted (see ``_FlopsCounted``)."""


class RichModelSummary(_FlopsCounted, pl.callbacks.RichModelSummary):
    """Lightning's rich model summary (its default where ``rich`` is installed) with its FLOPs counted."""


def _moved(state: dict[str, Any], dirpath: str | None) -> dict[str, Any]:
    """A checkpoint callback's saved state with its file paths moved from the folder it was saved in to
    ``dirpath``, where the run folder is now (a run copied or moved elsewhere and resumed); unchanged otherwise."""
    import os

    old = state.get("dirpath")
    if not old or not dirpath or os.path.abspath(old) == os.path.abspath(dirpath):
        return state

    def move(path: Any) -> Any:
        if isinstance(path, str) and path.startswith(old):
            return dirpath + path[len(old) :]
        return path

    state = dict(state)
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in state:
            state[key] = move(state[key])
    state["best_k_models"] = {move(k): v for k, v in (state.get("best_k_models") or {}).items()}
    state["dirpath"] = dirpath
    log.info("the run folder moved from %s to %s: its checkpoints' paths follow it", old, dirpath)
    return state


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (the best epoch by ``monitor``) whose best score and best file survive the run
    folder being moved or copied: Lightning's forgets them when the folder changed ("dirpath has changed"), so
    a resumed run would call its next epoch the best whatever it scored. Its saved state keeps
    ``ModelCheckpoint``'s key, so checkpoints written before it load."""

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(_moved(state_dict, self.dirpath))


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

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(_moved(state_dict, self.dirpath))

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if not self.save_on_interrupt or not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return
        if trainer.fast_dev_run or trainer.sanity_checking or self._last_global_step_saved == trainer.global_step:
            return
        path = self.format_checkpoint_name(self._monitor_candidates(trainer))
        self._in_validation = trainer.validating  # (the fit's validation; the test phase saves nothing here)
        try:
            self._save_checkpoint(trainer, path)
        finally:
            self._in_validation = False
        log.warning("training interrupted at step %d: saved %s (resume with ckpt_path=last)", trainer.global_step, path)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """Interrupted during validation: the checkpoint says validation was at its first batch, so a resume runs
        the whole validation again. (Lightning would store the batches done, and on resume skip that epoch's
        validation: no val metrics, no best checkpoint, no threshold. Continuing it part-way would be no better:
        the pair metrics need every validation image embedded by the same weights in one pass.)"""
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if not getattr(self, "_in_validation", False):
            return
        key = "epoch_loop.val_loop.batch_progress"
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get(key)
        if progress is None:
            raise RuntimeError(f"facenet_pl: Lightning's checkpoint has no loops.fit_loop.{key}: update LastCheckpoint")
        started = {"ready": 1, "started": 1, "processed": 0, "completed": 0}  # Lightning's "restarted mid-evaluation"
        progress.update(total=dict(started), current=dict(started), is_last_batch=False)


class CudaSyncCounter(Callback):
    """Debugging: count the host syncs CUDA reports over training steps ``start`` .. ``start + steps - 1``
    (``torch.cuda.set_sync_debug_mode("warn")``: every ``.item()``, ``float(t)``, blocking copy or data-sized op
    warns), and write ``{"steps": n, "syncs": count, "by_site": {...}}`` to ``path``. Without CUDA it writes
    ``{"syncs": null}``. Use: ``+callbacks.syncs._target_=facenet_pl.run.callbacks.CudaSyncCounter
    +callbacks.syncs.path=syncs.json``."""

    def __init__(self, path: str, start: int = 5, steps: int = 20) -> None:
        self.path, self.start, self.steps = path, int(start), int(steps)
        self.count, self.sites = 0, {}
        self._saved = None

    def _on(self) -> bool:
        return torch.cuda.is_available() and torch.cuda.is_initialized()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.start and self._on() and self._saved is None:
            import warnings

            self._saved = warnings.showwarning

            def record(message, category, filename, lineno, file=None, line=None):
                if "synchroniz" in str(message):
                    self.count += 1
                    where = f"{filename}:{lineno}"
                    self.sites[where] = self.sites.get(where, 0) + 1
                else:
                    self._saved(message, category, filename, lineno, file, line)

            warnings.showwarning = record
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        if trainer.global_step == self.start + self.steps:
            self._stop(trainer.global_step)

    def _stop(self, step: int) -> None:
        import json
        import warnings

        if self._saved is not None:
            torch.cuda.set_sync_debug_mode(0)
            warnings.showwarning, self._saved = self._saved, None
        steps = max(0, min(step, self.start + self.steps) - self.start)
        result = {"steps": steps, "syncs": self.count if self._on() else None, "by_site": self.sites}
        Path(self.path).write_text(json.dumps(result, indent=1))

    def on_train_end(self, trainer, pl_module) -> None:
        if not Path(self.path).exists():
            self._stop(trainer.global_step)


#: A folder with fewer training people than this, trained from scratch, gets a warning (benchmarks/README.md,
#: "Small folders": 16 and 26 training people measured).
SMALL_FOLDER_PEOPLE = 50


class FitChecks(Callback):
    """What a training run checks once its data is set up, before the first step: a validation that
    ``trainer.limit_val_batches`` would cut short (it chooses the checkpoint), and a folder of few people trained
    from scratch (a warning that names what works better)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            check_validation_is_whole(trainer, trainer.datamodule)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        warn_small_folder(trainer, pl_module)


def check_validation_is_whole(trainer: pl.Trainer, dm) -> None:
    """val/acc, which chooses the checkpoint and the threshold, needs every validation image embedded: a
    ``trainer.limit_val_batches`` that cuts validation short ended the first epoch in Lightning's "could not
    find the monitored key" traceback. Said here, before the first step."""
    t = trainer
    split, size = getattr(dm, "val_split", None), getattr(dm, "val_batch_size", None)
    limit = t.limit_val_batches
    if split is None or not size or t.fast_dev_run or (isinstance(limit, float) and limit >= 1.0):
        return
    monitors = sorted({str(cb.monitor) for cb in t.checkpoint_callbacks if getattr(cb, "monitor", None)})
    if not any(m.startswith("val/") for m in monitors):
        return
    batches = math.ceil(math.ceil(len(split.dataset) / t.world_size) / size)
    allowed = int(limit) if isinstance(limit, int) else int(batches * limit)
    if allowed < batches:
        raise ConfigError(
            f"trainer.limit_val_batches={limit} embeds {allowed} of the {batches} validation batches "
            f"(data.val_batch_size={size}), but {monitors[0]}, which chooses the checkpoint, is measured on "
            "every validation pair: leave trainer.limit_val_batches unset (or 1.0), or use "
            "trainer.fast_dev_run=true for a smoke run"
        )


def warn_small_folder(trainer: pl.Trainer, module: pl.LightningModule) -> None:
    """A folder with few training people and no trained weights to start from: say what works better (the
    plan is the data module's, made from the file list before this)."""
    dm = trainer.datamodule
    plan = getattr(dm, "plan", None)
    started = (module.hparams.get("model") or {}).get("init_from") or (module.hparams.get("backbone") or {}).get(
        "weights"
    )
    if plan is None or started or len(plan.train_ids) >= SMALL_FOLDER_PEOPLE:
        return
    named = getattr(dm, "test_identities", None)  # cv=N names each run's test people (a list)
    cv = named is not None and not isinstance(named, str | int | float)
    log.warning(
        "data: %d training people. Trained from scratch on so few, a network learns these people rather than "
        "faces: on ORL an imported face model scored 99.9%% as it came, 86.9%% trained from scratch "
        "(benchmarks/README.md). Start from a trained model: facenet-pl import-weights dlib -o dlib.safetensors, "
        "then experiment=finetune_dlib model.init_from=dlib.safetensors (docs/trained-models.md)%s",
        len(plan.train_ids),
        "" if cv else "; cv=5 for a steadier test figure",
    )
