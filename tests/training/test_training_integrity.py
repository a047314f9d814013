"""Training integrity through the real Trainer and train.py: what was actually trained, saved and resumed.

Every test here records the dataset indices of every trained batch with ``tests.helpers.RecordBatches``
(a callback Lightning calls) instead of calling sampler methods by hand.
"""

from __future__ import annotations

import csv
import signal
from collections import defaultdict

import numpy as np
import pytest
import torch

from ..helpers import (
    one_torch_thread,
    read_batches,
    tiny_datamodule,
    tiny_labels,
    tiny_module,
    train_in_forked_process,
    train_in_process,
)

RECORD = "+callbacks.record._target_=tests.helpers.RecordBatches"


def _epochs(rows: list[dict]) -> dict[int, list[tuple[int, ...]]]:
    out: dict[int, list[tuple[int, ...]]] = defaultdict(list)
    for r in rows:
        out[r["epoch"]].append(tuple(r["idx"]))
    return dict(out)


def test_every_epoch_trains_new_batches_and_covers_the_training_set(tmp_path):
    rec = tmp_path / "batches.jsonl"
    train_in_process(tmp_path, "trainer.max_epochs=6", RECORD, f"+callbacks.record.path={rec}")
    epochs = _epochs(read_batches(rec))
    assert sorted(epochs) == list(range(6)) and all(len(b) == 24 // 4 for b in epochs.values())
    assert len({tuple(b) for b in epochs.values()}) == 6, "an epoch repeated another epoch's batches"
    labels = tiny_labels()
    seen = np.unique([i for b in epochs.values() for batch in b for i in batch])
    # every identity is drawn every epoch (P x steps = 24); K=3 of 4 images each time, so over
    # 6 epochs an image is missed with probability (1/4)^6: all but at most a few of the 96 appear
    for e, batches in epochs.items():
        assert set(labels[np.concatenate(batches)]) == set(range(24)), f"epoch {e} left an identity out"
    assert len(seen) >= 0.95 * len(labels), f"only {len(seen)} of {len(labels)} images trained on"


def test_batches_are_deterministic_per_seed_through_the_trainer(tmp_path):
    runs = {}
    for name, seed in [("a", 7), ("b", 7), ("c", 8)]:
        rec = tmp_path / f"{name}.jsonl"
        train_in_process(
            tmp_path / name,
            "trainer.max_epochs=2",
            "test=false",
            f"seed={seed}",
            f"data.seed={seed}",
            RECORD,
            f"+callbacks.record.path={rec}",
        )
        runs[name] = [r["idx"] for r in read_batches(rec)]
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_offline_mining_draws_new_batches_every_epoch(tmp_path):
    rec = tmp_path / "batches.jsonl"
    train_in_process(
        tmp_path,
        "trainer.max_epochs=3",
        "miner.offline.every_n_steps=2",
        "miner.offline.subset_identities=8",
        "miner.offline.images_per_identity=3",
        RECORD,
        f"+callbacks.record.path={rec}",
    )
    epochs = _epochs(read_batches(rec))
    assert sorted(epochs) == [0, 1, 2]
    assert len({tuple(b) for b in epochs.values()}) == 3
    labels = tiny_labels()
    for batches in epochs.values():
        for b in batches:  # [anchors, positives, negatives]: same identity for a/p, another for n
            a, p, n = np.split(labels[list(b)], 3)
            assert (a == p).all() and (a != n).all()


def test_last_ckpt_is_the_final_model_when_the_best_epoch_is_earlier(tmp_path):
    rec, final = tmp_path / "batches.jsonl", tmp_path / "final.pt"
    # time/elapsed_s only grows, so mode=min makes epoch 0 the best for certain
    metrics = train_in_process(
        tmp_path / "run",
        "trainer.max_epochs=3",
        "callbacks.model_checkpoint.monitor=time/elapsed_s",
        "callbacks.model_checkpoint.mode=min",
        RECORD,
        f"+callbacks.record.path={rec}",
        f"+callbacks.record.weights={final}",
    )
    ckpts = tmp_path / "run" / "checkpoints"
    best = torch.load(metrics["best_model_path"], map_location="cpu", weights_only=True)
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 0 and best["global_step"] == 6
    assert last["epoch"] == 2 and last["global_step"] == 18 == read_batches(rec)[-1]["step"]
    weights = torch.load(final, weights_only=True)
    assert weights.keys() == last["state_dict"].keys()
    for k, v in weights.items():
        assert torch.equal(v, last["state_dict"][k]), k
    assert torch.isfinite(last["state_dict"]["threshold"]), "last.ckpt was written before the epoch's validation"
    names = sorted(p.name for p in ckpts.iterdir())
    assert len(names) == 2 and names[0].startswith("epoch000-") and names[1] == "last.ckpt", names


RESUME = ["data.train_identities=48", "trainer.max_epochs=3"]  # 12 steps per epoch, 36 in all


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("uninterrupted")
    with one_torch_thread():
        train_in_process(run, *RESUME, RECORD, f"+callbacks.record.path={run / 'batches.jsonl'}")
    return read_batches(run / "batches.jsonl")


@pytest.fixture
def one_thread():
    """The resume tests compare losses across runs: every run of them (the killed one is a one-thread fork)
    sums in the same order."""
    with one_torch_thread():
        yield


@pytest.mark.parametrize(
    "how,every_n,stop_at,ckpt_step",
    [
        ("sigkill_mid_epoch", 5, 17, 15),  # killed in epoch 1; last.ckpt after batch 3 of epoch 1
        ("sigkill_after_epoch_end", None, 30, 24),  # killed in epoch 2; last.ckpt at the end of epoch 1
        ("ctrl_c_mid_epoch", None, 20, 20),  # KeyboardInterrupt: last.ckpt written at the interrupt
    ],
)
def test_resumed_run_trains_exactly_the_uninterrupted_sequence(
    tmp_path, uninterrupted, one_thread, how, every_n, stop_at, ckpt_step
):
    rec = tmp_path / "batches.jsonl"
    common = [*RESUME, RECORD, f"+callbacks.record.path={rec}"]
    if every_n:
        common.append(f"callbacks.last_checkpoint.every_n_train_steps={every_n}")
    if how.startswith("sigkill"):
        # the run is a fork of this process, killed with SIGKILL by the callback at that step
        killed = train_in_forked_process(tmp_path, *common, f"+callbacks.record.kill_at_step={stop_at}", logger=True)
        assert killed == -9, killed
    else:
        sigint = signal.getsignal(signal.SIGINT)
        try:
            with pytest.raises(SystemExit):  # Lightning turns Ctrl-C into a graceful stop + exit(1)
                train_in_process(
                    tmp_path,
                    *common,
                    "+callbacks.stop._target_=tests.helpers.InterruptAt",
                    f"+callbacks.stop.step={stop_at}",
                    logger=True,
                )
        finally:
            signal.signal(signal.SIGINT, sigint)  # Lightning ignores SIGINT after an interrupt
    first = read_batches(rec)
    assert first[-1]["step"] == stop_at
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == ckpt_step

    rec.rename(tmp_path / "first.jsonl")
    train_in_process(tmp_path, *common, "ckpt_path=last", logger=True)
    resumed = read_batches(rec)
    combined = [r for r in first if r["step"] <= ckpt_step] + resumed

    def key(rows):
        return [(r["epoch"], r["step"], r["idx"]) for r in rows]

    assert key(combined) == key(uninterrupted)
    # weights, optimiser, scheduler and random state were restored: the first resumed step's loss is the
    # uninterrupted run's (up to CPU summation order)
    assert resumed[0]["loss"] == pytest.approx(uninterrupted[ckpt_step]["loss"], rel=1e-4, abs=1e-6)
    # the CSV log holds each step once and each validation once
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    steps = [int(float(r["step"])) for r in rows if r.get("train/loss")]
    assert len(steps) == len(set(steps)), "a step was logged twice"
    assert sorted(int(float(r["epoch"])) for r in rows if r.get("val/acc")) == [0, 1, 2]


@pytest.mark.parametrize(
    "trainer_kwargs",
    [
        dict(max_epochs=3),
        dict(max_epochs=3, limit_train_batches=4),
        dict(max_epochs=2, limit_train_batches=0.5),
        dict(max_epochs=3, accumulate_grad_batches=4),
        dict(max_epochs=5, max_steps=7),
    ],
    ids=["epochs", "limit_int", "limit_float", "accumulate", "max_steps"],
)
def test_lr_schedule_length_equals_lightnings_estimate(trainer_kwargs):
    """The module counts the schedule's steps itself (Lightning's estimate would build the train iterator
    before a checkpoint is restored); once training runs, Lightning's own estimate must agree."""
    import pytorch_lightning as pl

    from facenet_pl.training.schedulers import total_training_steps

    seen = {}

    class Compare(pl.Callback):
        def on_train_start(self, trainer, module):
            seen["ours"], seen["lightning"] = total_training_steps(trainer), trainer.estimated_stepping_batches
            raise KeyboardInterrupt  # nothing more to train

    dm = tiny_datamodule(image_size=32)
    module = tiny_module(scheduler={"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": "total_steps"})
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[Compare()],
        **trainer_kwargs,
    )
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):
            trainer.fit(module, datamodule=dm)
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert seen["ours"] == seen["lightning"] > 0, seen
