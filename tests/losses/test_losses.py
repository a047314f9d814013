"""Classification losses (loss=arcface, cosface, subcenter_arcface, normalized_softmax), the triplet + ArcFace hybrid
and the two-phase schedule, trained through train.py and checked against pytorch-metric-learning's own call on the
same embeddings; class weights in checkpoints, on resume, out of exported models, and under DDP."""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_metric_learning import losses as pml

from ..helpers import (
    one_torch_thread,
    read_batches,
    run_train,
    train_in_forked_process,
)

#: loss config -> (pytorch-metric-learning class, its arguments as the YAML gives them)
PML = {
    "arcface": (pml.ArcFaceLoss, {"margin": 28.6, "scale": 64}),
    "cosface": (pml.CosFaceLoss, {"margin": 0.35, "scale": 64}),
    "subcenter_arcface": (pml.SubCenterArcFaceLoss, {"margin": 28.6, "scale": 64, "sub_centers": 3}),
    "normalized_softmax": (pml.NormalizedSoftmaxLoss, {"temperature": 0.05}),
}


class ReferenceLoss(Callback):
    """At each training batch: the step's embeddings recomputed on a copy of the model (same weights, train mode: the
    same batch statistics; augment=none), the loss pytorch-metric-learning's own class gives on them with the model's
    class weights copied in, and the loss the step returned. One JSON line per step and rank in ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pending: dict = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        images, labels, idx = batch
        twin = copy.deepcopy(pl_module)
        with torch.no_grad():
            emb = twin(twin._inputs(images, augment=False))
        # class index of a label: its rank among the sorted training labels, computed here without the model's code
        train_labels = sorted({int(v) for v in np.asarray(trainer.datamodule.train_set.labels)})
        index = {label: i for i, label in enumerate(train_labels)}
        classes = torch.tensor([index[int(v)] for v in labels])
        row = {
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "rank": trainer.global_rank,
            "idx": idx.tolist(),
            "classes": classes.tolist(),
            "emb": emb.tolist(),
        }
        clf = pl_module.classifier
        if clf is not None:
            cls, _ = PML[clf.name]
            ref = cls(num_classes=len(train_labels), embedding_size=emb.shape[1], **clf.loss_kwargs)
            ref.W.data.copy_(clf.loss.W.detach())  # the library's own loss on the model's class weights
            row["W"] = clf.loss.W.detach().flatten().tolist()
            with torch.no_grad():
                row["pml"] = float(ref(emb, classes))
        if pl_module.triplet_loss is not None:
            from facenet_pl.mining import SemiHardMiner

            with torch.no_grad():
                row["triplet"] = float(pl_module.triplet_loss(emb, SemiHardMiner()(emb, labels))[0])
        self.pending = row

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.pending["loss"] = float(outputs["loss"])
        with open(self.path, "a") as f:
            f.write(json.dumps(self.pending) + "\n")


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def _reference(tmp_path) -> list[str]:
    return [
        "+callbacks.ref._target_=tests.losses.test_losses.ReferenceLoss",
        f"+callbacks.ref.path={tmp_path / 'ref.jsonl'}",
    ]


@pytest.mark.parametrize("name", list(PML))
def test_classification_loss_trains_and_equals_the_library_call(tmp_path, name):
    out = run_train(
        tmp_path, f"loss={name}", "augment=none", "trainer.max_steps=2", "test=false", *_reference(tmp_path)
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = _rows(tmp_path / "ref.jsonl")
    assert [r["step"] for r in rows] == [0, 1]
    for r in rows:
        assert r["loss"] == pytest.approx(r["pml"], rel=1e-4, abs=1e-4)
    assert rows[0]["W"] != rows[1]["W"]  # the class weights are trained
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (key,) = [k for k in ckpt["state_dict"] if k.startswith("criterion.")]
    per_class = PML[name][1].get("sub_centers", 1)
    assert tuple(ckpt["state_dict"][key].shape) == (128, 24 * per_class)  # 24 training people (TINY), 128-d
    assert ckpt["facenet_pl"]["num_classes"] == 24


def test_hybrid_is_the_weighted_sum_and_two_phase_switches(tmp_path):
    hybrid = tmp_path / "hybrid"
    out = run_train(
        hybrid,
        "loss=triplet_arcface",
        "loss.triplet_weight=2.0",
        "loss.classification_weight=0.5",
        "augment=none",
        "trainer.max_steps=2",
        "test=false",
        *_reference(hybrid),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for r in _rows(hybrid / "ref.jsonl"):
        assert r["loss"] == pytest.approx(2.0 * r["triplet"] + 0.5 * r["pml"], rel=1e-4, abs=1e-4)

    phased = tmp_path / "phased"
    out = run_train(
        phased,
        "loss=arcface_then_triplet",
        "loss.classification_epochs=1",
        "data.batches_per_epoch=2",
        "trainer.max_epochs=2",
        "augment=none",
        "test=false",
        "trainer.log_every_n_steps=1",
        *_reference(phased),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = _rows(phased / "ref.jsonl")
    assert [r["epoch"] for r in rows] == [0, 0, 1, 1]
    for r in rows[:2]:  # epoch 0: ArcFace alone
        assert r["loss"] == pytest.approx(r["pml"], rel=1e-4, abs=1e-4)
    for r in rows[2:]:  # then the triplet loss alone, on the semi-hard miner's triplets
        assert r["loss"] == pytest.approx(r["triplet"], rel=1e-4, abs=1e-6)
    # as the logger received them: the classification part's curve through both phases (its class weights are in
    # the graph anyway), the triplet part's from its phase on (nothing is mined before)
    logged = [r for r in csv.DictReader(open(phased / "csv" / "metrics.csv")) if r.get("train/loss")]
    assert len(logged) == 4
    for ref, got in zip(rows, logged):
        assert float(got["train/class_loss"]) == pytest.approx(ref["pml"], rel=1e-4, abs=1e-4)
    assert [got["train/triplet_loss"] for got in logged[:2]] == ["", ""]
    for ref, got in zip(rows[2:], logged[2:]):
        assert float(got["train/triplet_loss"]) == pytest.approx(ref["triplet"], rel=1e-4, abs=1e-6)


def test_exported_models_hold_no_class_weights(tmp_path):
    from safetensors.torch import load_file

    from facenet_pl.inference.embed import load_model

    from ..helpers import run_cli

    out = run_train(tmp_path, "loss=cosface", "trainer.max_steps=2", "test=false")
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    sf = tmp_path / "model.safetensors"
    r = run_cli("export", ckpt, "-o", sf)
    assert r.returncode == 0, r.stderr
    tensors = load_file(str(sf))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert not [k for k in tensors if k.startswith("criterion.")]
    assert set(tensors) == {k for k in state if not k.startswith("criterion.")}
    x = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    from_ckpt, from_sf = load_model(ckpt), load_model(sf)
    assert from_ckpt.classifier is not None and not from_ckpt.classifier.built  # inference builds no classifier
    assert torch.allclose(from_ckpt.embed(x), from_sf.embed(x), atol=1e-6)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["loss=arcface", "miner=semihard"], "loss=arcface is a classification loss"),
        (["miner=none"], "miner=none: the triplet loss needs a miner"),
        (["loss=arcface", "data.sampler=shuffled"], "data.sampler='shuffled'"),
        (["loss=cosface", "loss.margn=0.2"], "loss=cosface"),
    ],
)
def test_bad_loss_settings_are_one_line(tmp_path, overrides, message):
    from ..helpers import train_error_in_process

    err = train_error_in_process(tmp_path, *[o if "margn" not in o else "+" + o for o in overrides])
    assert message in err and "Traceback" not in err


def test_random_batches_and_class_weights_resume_mid_epoch(tmp_path):
    """loss=arcface on data.sampler=random, SIGKILLed after step 11 (before its checkpoint), resumed with
    ckpt_path=last: last.ckpt holds the class weights, and the resumed steps have the uninterrupted run's batches,
    class weights and losses."""
    common = ["loss=arcface", "data.sampler=random", "trainer.max_epochs=2", "test=false"]
    rec = ["+callbacks.record._target_=tests.helpers.RecordBatches"]
    whole = tmp_path / "whole"
    with one_torch_thread():
        out = run_train(whole, *common, *rec, f"+callbacks.record.path={whole / 'b.jsonl'}", *_reference(whole))
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_batches(whole / "b.jsonl")
    # TINY: 96 training images, batches of P x K = 12: 8 per epoch, each image once per epoch
    assert len(rows) == 16
    for epoch in (0, 1):
        seen = [i for r in rows if r["epoch"] == epoch for i in r["idx"]]
        assert sorted(seen) == list(range(96))
    killed = tmp_path / "killed"
    code = train_in_forked_process(
        killed,
        *common,
        *rec,
        f"+callbacks.record.path={killed / 'b.jsonl'}",
        "+callbacks.record.kill_at_step=11",
        "callbacks.last_checkpoint.every_n_train_steps=1",
        *_reference(killed),
    )
    assert code == -9
    ckpt = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 10 and any(k.startswith("criterion.") for k in ckpt["state_dict"])
    with one_torch_thread():
        out = run_train(
            killed, *common, *rec, f"+callbacks.record.path={killed / 'b.jsonl'}", "ckpt_path=last", *_reference(killed)
        )
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = {r["step"]: r for r in read_batches(killed / "b.jsonl")}  # step 11 trained again after the kill
    assert [r["idx"] for r in resumed.values()] == [r["idx"] for r in rows]
    assert [r["loss"] for r in resumed.values()] == pytest.approx([r["loss"] for r in rows], rel=1e-5)
    a = {r["step"]: r for r in _rows(whole / "ref.jsonl")}
    b = {
        r["step"]: r for r in _rows(killed / "ref.jsonl")
    }  # the resumed run's row of step 10 replaces the killed one's
    for step in range(10, 16):  # from the restored checkpoint on: the same class weights as the uninterrupted run
        assert a[step]["W"] == pytest.approx(b[step]["W"], abs=1e-6), step


def check_ddp_reference(path) -> None:
    """What tests/training/test_ddp.py's rec run (2 CPU ranks, loss=arcface, augment=none, :class:`ReferenceLoss`)
    trained: each rank's batch is its own slice of the step; the mean of the ranks' losses is pytorch-metric-learning's
    loss on both ranks' embeddings together with the same class weights (what one process computes on the
    concatenated batch), each rank's own loss is the library's on its slice (no world-size scaling), and the class
    weights are the same on both ranks at every step (DDP keeps them in step)."""
    rows = _rows(path)
    steps = sorted({r["step"] for r in rows})
    assert len(steps) >= 2
    for step in steps:
        r0, r1 = sorted((r for r in rows if r["step"] == step), key=lambda r: r["rank"])
        assert not set(r0["idx"]) & set(r1["idx"])
        assert r0["W"] == pytest.approx(r1["W"], abs=1e-7)
        emb = torch.tensor(r0["emb"] + r1["emb"])
        classes = torch.tensor(r0["classes"] + r1["classes"])
        ref = pml.ArcFaceLoss(num_classes=24, embedding_size=emb.shape[1], margin=28.6, scale=64)
        ref.W.data.copy_(torch.tensor(r0["W"]).reshape(ref.W.shape))
        with torch.no_grad():
            assert float(ref(emb, classes)) == pytest.approx((r0["loss"] + r1["loss"]) / 2, rel=1e-4)
        assert r0["loss"] == pytest.approx(r0["pml"], rel=1e-4) and r1["loss"] == pytest.approx(r1["pml"], rel=1e-4)


def test_random_batches_split_each_step_between_ranks_and_are_fixed_by_seed_and_epoch():
    from facenet_pl.data.samplers import RandomBatchSampler

    def batches(rank, epoch, seed=0, skip=0):
        s = RandomBatchSampler(50, 6, num_replicas=2, rank=rank, seed=seed)
        s.resume(epoch, skip)
        return list(s)

    r0, r1 = batches(0, 3), batches(1, 3)
    assert len(r0) == len(r1) == 50 // 12  # whole global steps only
    seen = [i for a, b in zip(r0, r1) for i in a + b]
    assert len(seen) == len(set(seen)) == 48  # each image at most once per epoch, ranks disjoint
    assert batches(0, 3) == r0 and batches(0, 4) != r0 and batches(0, 3, seed=1) != r0
    assert batches(0, 3, skip=2) == r0[2:]  # resuming after 2 batches yields the rest of that epoch
    many = RandomBatchSampler(50, 6, batches_per_epoch=10, seed=0)  # more steps than one pass: a new permutation
    drawn = list(many)
    assert len(drawn) == 10 and len({i for b in drawn[:8] for i in b}) == 48  # the first pass: 8 steps, no repeat
