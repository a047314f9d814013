"""Faults: atomic checkpoints, no overwriting, config errors before any work (NaN losses and collapse:
tests/training/test_guards.py)."""

from __future__ import annotations

import errno

import pytest
import torch

from facenet_pl.training.checkpoint_io import atomic_torch_save

from ..helpers import train_error_in_process, train_in_process


def test_atomic_save_survives_disk_full(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"v": 1}, path)

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        atomic_torch_save({"v": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


def test_an_existing_run_directory_is_never_overwritten(tmp_path):
    fast = ("trainer.max_epochs=1", "trainer.limit_train_batches=1", "test=false")
    train_in_process(tmp_path, *fast)  # train()'s code path in this interpreter (train.py's exit: test_user_errors)
    before = (tmp_path / "checkpoints" / "last.ckpt").read_bytes()
    assert "not overwriting" in train_error_in_process(tmp_path, *fast)
    assert (tmp_path / "checkpoints" / "last.ckpt").read_bytes() == before
    # (continuing with ckpt_path=last is tested in test_experiments.py::test_kill_9_mid_epoch_then_resume...)


@pytest.mark.parametrize(
    "override,message",
    [
        ("backbone.name=resnet_nope", "backbone.name='resnet_nope' is not a timm model"),
        ("miner=nope", "Could not find 'miner/nope'"),
        ("data.k=1", "data.k"),
        ("nonexistent_key=1", "nonexistent_key"),
        ("data.p=500", "data.p=500 identities per batch, but the built-in data has data.train_identities=24"),
        ("miner.offline.every_n_steps=-1", "miner.offline.every_n_steps must be >= 0"),
        ("miner.offline.every_n_steps=1 miner.offline.subset_identities=100", "Lower miner.offline.subset_identities"),
    ],
)
def test_bad_config_messages(tmp_path, override, message):
    with pytest.raises(Exception) as err:
        train_in_process(tmp_path, *override.split(), "trainer.max_epochs=1")
    assert message in str(err.value)
    assert not (tmp_path / "checkpoints").exists()  # failed before any checkpoint was written
