"""Faults: NaN loss, collapse, atomic checkpoints, no overwriting, config errors before any work."""

from __future__ import annotations

import errno
import logging

import pytest
import torch

from facenet_pl.checkpoint_io import atomic_torch_save
from facenet_pl.module import NonFiniteLossError

from .helpers import tiny_module, train_error_in_process, train_in_process


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    msg = train_error_in_process(
        tmp_path,
        "trainer.max_epochs=3",
        "+callbacks.nan._target_=tests.helpers.InjectNaNWeights",
        "+callbacks.nan.step=8",
    )  # 6 steps per epoch: epoch 1 ends well, step 8 fails
    assert "non-finite loss" in msg and "last good checkpoint" in msg
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 6
    assert all(
        torch.isfinite(v).all()
        for v in ckpt["state_dict"].values()
        if v.is_floating_point() and v.numel() and "threshold" not in str(v)
    )


@pytest.mark.parametrize("every_n_ckpt,stops_at", [(None, 12), (1, 10)])
def test_guards_read_every_n_steps_stop_within_n_and_never_checkpoint_a_bad_step(tmp_path, every_n_ckpt, stops_at):
    """model.guard_every_n_steps=4 (the guards are read at steps 8, 12, ...): NaN weights at step 9 stop training at
    the next read (step 12), or at the next checkpoint write when one comes first (every step: step 10, whose
    checkpoint is not written); the message names step 9, and last.ckpt holds finite weights from before it."""
    extra = [f"callbacks.last_checkpoint.every_n_train_steps={every_n_ckpt}"] if every_n_ckpt else []
    msg = train_error_in_process(
        tmp_path,
        "trainer.max_epochs=3",
        "model.guard_every_n_steps=4",
        "+callbacks.nan._target_=tests.helpers.InjectNaNWeights",
        "+callbacks.nan.step=9",
        *extra,
    )
    assert "non-finite loss (nan) at step 9" in msg and f"training stopped at step {stops_at}" in msg, msg
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == (9 if every_n_ckpt else 6)  # the newest checkpoint from before step 9
    assert all(
        torch.isfinite(v).all() for k, v in ckpt["state_dict"].items() if v.is_floating_point() and "threshold" not in k
    )


def test_collapse_is_detected_and_warned(caplog):
    """The rule, on the values a guard read hands it: a spread of 0 (every embedding one point) warns; a healthy
    batch (spread 1.9, d(a,n) > d(a,p)) does not."""
    m = tiny_module()
    with caplog.at_level(logging.WARNING):
        m._check_collapse(0.0, 1e-7, 1e-7)
    assert m.collapse_warnings == 1 and "embedding collapse" in caplog.text
    m2 = tiny_module()
    m2._check_collapse(1.9, 0.9, 0.3)
    assert m2.collapse_warnings == 0


def test_non_finite_loss_raises_in_training_step(monkeypatch):
    m = tiny_module()
    monkeypatch.setattr(m, "log", lambda *a, **k: None)
    images = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    with torch.no_grad():
        m.net.head.bias.fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        m.training_step((images, labels, torch.arange(8)), 0)


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
        ("data.p=500", "PKSampler needs p x world_size"),
        ("miner.offline.every_n_steps=-1", "miner.offline.every_n_steps must be >= 0"),
        ("miner.offline.every_n_steps=1 miner.offline.subset_identities=100", "Lower miner.offline.subset_identities"),
    ],
)
def test_bad_config_messages(tmp_path, override, message):
    with pytest.raises(Exception) as err:
        train_in_process(tmp_path, *override.split(), "trainer.max_epochs=1")
    assert message in str(err.value)
    assert not (tmp_path / "checkpoints").exists()  # failed before any checkpoint was written
