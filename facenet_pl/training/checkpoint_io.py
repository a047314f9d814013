"""Atomic checkpoint writes: a crash or a full disk never leaves a half-written checkpoint.

Lightning's ``TorchCheckpointIO`` writes the destination file in place; a failure mid-write
(ENOSPC, SIGKILL) truncates the previous ``last.ckpt``. This writes to a temporary file in the
same folder, fsyncs it and renames it over the destination (atomic on POSIX).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from facenet_pl.utils.fileio import atomic_write


class _WriteErrors:
    """A file wrapper that remembers the OSError of a failed write: torch's zip writer turns a short write into
    ``RuntimeError: ... unexpected pos``, which says nothing of a full disk; the OSError does."""

    def __init__(self, f) -> None:
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str):
        return getattr(self.f, name)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` via temp file + fsync + rename; the temp file is removed on failure. A write that
    failed inside torch's writer is raised as the OSError it was (ENOSPC, EROFS), not torch's RuntimeError."""

    def write(f) -> None:
        wrapped = _WriteErrors(f)
        try:
            torch.save(obj, wrapped)
        except RuntimeError:
            if wrapped.error is not None:
                raise wrapped.error from None
            raise

    atomic_write(path, write)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``save_checkpoint`` is atomic and refuses diverged weights.

    A checkpoint whose weights or BatchNorm statistics are NaN, inf or beyond ``max_abs_weight`` is not
    written (:class:`~facenet_pl.training.guards.DivergedWeightsError`): every checkpoint on disk is one a run can
    resume from. A full disk is one line naming the folder and its free space; the previous file stays.
    """

    def __init__(self, max_abs_weight: float | None = None) -> None:
        super().__init__()
        self.max_abs_weight = max_abs_weight

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        from facenet_pl.training.guards import MAX_ABS_WEIGHT, DivergedWeightsError, diverged_tensor
        from facenet_pl.utils.errors import ConfigError, free_space, is_disk_full

        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        limit = self.max_abs_weight or MAX_ABS_WEIGHT
        bad = diverged_tensor(checkpoint.get("state_dict", {}).items(), limit)
        if bad is not None:
            raise DivergedWeightsError(
                f"not writing {path}: {bad[0]} is {bad[1]:.3g} (NaN, inf or beyond model.max_abs_weight={limit:g}); "
                "training diverged. Lower optimizer.lr or set trainer.gradient_clip_val."
            )
        try:
            atomic_torch_save(checkpoint, path)
        except OSError as e:
            if not is_disk_full(e):
                raise
            folder = os.path.dirname(os.path.abspath(path))
            raise ConfigError(
                f"disk full writing checkpoint {path} ({free_space(folder)} in {folder}); the previous "
                "checkpoints there are intact. Free space and resume with ckpt_path=last."
            ) from None


def rng_states() -> dict[str, Any]:
    """The random state a checkpoint keeps (flip augmentation draws from it), so a resumed run continues it."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng_states(rng: dict[str, Any] | None) -> None:
    """Set what :func:`rng_states` kept (the CUDA part only on as many devices as were saved); None: nothing."""
    if not rng:
        return
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
