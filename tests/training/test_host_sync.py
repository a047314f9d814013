"""The training step never waits for the host (issue 31): counted through the real Trainer.

On a GPU every ``.item()``, ``float(t)``, ``bool(t)`` / ``if t:`` and every op whose output shape depends on the data
(``nonzero``, ``masked_select``, ``unique``...) makes the CPU wait for the device, so the next step cannot be queued.
A ``TorchDispatchMode`` sees each of them as an aten op (``_local_scalar_dense`` behind item/float/bool) on any
device, so they are counted here on the CPU, over whole steps (forward, loss, backward, optimiser, our hooks and
Lightning's), with the miner's own ops counted apart: semi-hard mining picks a data-dependent number of triplets.
"""

from __future__ import annotations

import torch
from pytorch_lightning import Callback
from torch.utils._python_dispatch import TorchDispatchMode

from ..helpers import TINY, train_in_process

#: aten ops that make the host wait for the device (a value read, or an output sized by the data).
SYNC_OPS = {
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "aten::nonzero_static",
    "aten::masked_select",
    "aten::unique_dim",
    "aten::_unique2",
    "aten::unique_consecutive",
    "aten::is_nonzero",
    "aten::equal",
}


class SyncCounter(TorchDispatchMode):
    """Counts :data:`SYNC_OPS` while ``active``; ``where`` says which part of the step they came from."""

    def __init__(self) -> None:
        super().__init__()
        self.active, self.where = False, "step"
        self.counts: dict[tuple[int, str], list[str]] = {}
        self.step = -1
        #: ids of tensors torch keeps on the CPU on purpose: the optimiser's step counters (Adam reads them with
        #: .item() to compute its bias correction; they are CPU tensors even when the model is on a GPU).
        self.host_tensors: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if self.active and name in SYNC_OPS and not (args and id(args[0]) in self.host_tensors):
            self.counts.setdefault((self.step, self.where), []).append(name)
        return func(*args, **(kwargs or {}))


class _CountedMiner:
    def __init__(self, miner, counter: SyncCounter) -> None:
        self.miner, self.counter = miner, counter

    def __call__(self, embeddings, labels):
        self.counter.where = "miner"
        try:
            return self.miner(embeddings, labels)
        finally:
            self.counter.where = "step"


class CountSyncs(Callback):
    """Counts host syncs from the start of each training batch to the end of Lightning's bookkeeping of it (forward,
    loss, backward, optimiser, every on_train_batch_end hook, logging), for the steps after the first (warm-up:
    lazily built state). Batches are fetched outside the window (data loading runs on the CPU in a GPU run too)."""

    counter: SyncCounter | None = None

    def on_fit_start(self, trainer, pl_module):
        CountSyncs.counter = SyncCounter()
        pl_module.miner = _CountedMiner(pl_module.miner, CountSyncs.counter)
        CountSyncs.counter.__enter__()

    def on_train_start(self, trainer, pl_module):
        """Data loading is not the training step (a GPU run loads batches on the CPU, in workers): not counted."""
        ds, c = trainer.datamodule.train_set, CountSyncs.counter
        fetch = ds.__getitems__

        def uncounted(indices):
            active, c.active = c.active, False
            try:
                return fetch(indices)
            finally:
                c.active = active

        ds.__getitems__ = uncounted
        # The step ends with Lightning's per-step bookkeeping (logged values, progress bar); the epoch's validation
        # that may follow is not the training step: counting stops there, and starts again at the next batch.
        connector = trainer._logger_connector
        end_of_step = connector.on_batch_end

        def then_stop(*args, **kwargs):
            out = end_of_step(*args, **kwargs)
            c.active = False
            return out

        connector.on_batch_end = then_stop

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        c = CountSyncs.counter
        c.host_tensors = {
            id(s["step"]) for opt in trainer.optimizers for s in opt.state.values() if torch.is_tensor(s.get("step"))
        }
        c.step, c.active = trainer.global_step, trainer.global_step >= 1

    def on_fit_end(self, trainer, pl_module):
        CountSyncs.counter.active = False
        CountSyncs.counter.__exit__(None, None, None)


def _counts(tmp_path, *overrides):
    """Syncs counted per (step, part) and the steps at which the guards were read."""
    from facenet_pl.training.guards import TrainingGuards

    reads, read = [], TrainingGuards.read

    def counted_read(self):
        reads.append(CountSyncs.counter.step)
        return read(self)

    TrainingGuards.read = counted_read
    try:
        train_in_process(
            tmp_path,
            *TINY,
            "trainer.max_epochs=2",
            "trainer.log_every_n_steps=1000",  # Lightning reads logged values only when it logs
            "trainer.enable_progress_bar=false",
            "+callbacks.syncs._target_=tests.training.test_host_sync.CountSyncs",
            *overrides,
        )
    finally:
        TrainingGuards.read = read
    return CountSyncs.counter.counts, reads


def test_no_training_step_waits_for_the_host(tmp_path):
    """12 steps with the guards read every 4 steps: outside the miner, no step makes a host sync (on a GPU the guard
    read, one device-to-host copy of 8 numbers, is the only one: steps 4 and 8, and before each checkpoint write);
    semi-hard mining makes its own (a nonzero and a max per batch: the number of triplets depends on the data)."""
    counts, reads = _counts(tmp_path, "model.guard_every_n_steps=4")
    for s in range(1, 12):
        assert counts.get((s, "step"), []) == [], (s, counts.get((s, "step")))
        assert counts.get((s, "miner")) == ["aten::nonzero", "aten::_local_scalar_dense"], s
    in_steps = [s for s in reads if s >= 1]
    assert {4, 8} <= set(in_steps) and not {s for s in in_steps if s % 4} - {5, 11}  # + the epoch-end checkpoints


class FloatEachStep(Callback):
    """A host sync of the kind the step must not make: ``float()`` of the loss after every batch."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        float(outputs["loss"])


def test_the_counter_sees_a_sync(tmp_path):
    """The instrument itself: a float() of a tensor in the step is counted."""
    counts, _ = _counts(
        tmp_path, "model.guard_every_n_steps=4", "+callbacks.float._target_=tests.training.test_host_sync.FloatEachStep"
    )
    assert counts.get((5, "step")) == ["aten::_local_scalar_dense"]


def test_guards_are_read_on_every_step_when_asked(tmp_path):
    """``model.guard_every_n_steps=1`` (``auto`` on a CPU, where a read costs nothing): a read every step."""
    _, reads = _counts(tmp_path, "model.guard_every_n_steps=1")
    assert set(range(12)) <= set(reads)


def test_a_classification_loss_step_makes_no_host_sync(tmp_path):
    """loss=arcface (pytorch-metric-learning's ArcFaceLoss, class weights, the label -> class lookup by searchsorted):
    no miner, and no host sync in any step."""
    counts, _ = _counts(tmp_path, "model.guard_every_n_steps=4", "loss=arcface", "trainer.max_steps=6")
    assert not [k for k, v in counts.items() if v and k[0] >= 1], counts
    assert CountSyncs.counter.step == 5  # the counter ran over every step (test_the_counter_sees_a_sync: it sees)
