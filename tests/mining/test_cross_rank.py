"""Cross-rank mining: 2 gloo processes on B/2 each give the triplets, loss and gradient of 1 process on B."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from facenet_pl.losses import TripletLoss
from facenet_pl.mining import SemiHardMiner
from facenet_pl.mining.cross_rank import gather_batch

B, D_IN, D = 24, 10, 6


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, D_IN, generator=g, dtype=torch.float64)
    labels = torch.arange(6).repeat_interleave(4)[torch.randperm(B, generator=g)]
    w = torch.randn(D, D_IN, generator=g, dtype=torch.float64)
    return x, labels, w


def _step(x, labels, w):
    """Embed with a linear map, mine semi-hard on the (gathered) batch, loss x world; returns all parts."""
    w = w.clone().requires_grad_(True)
    emb = torch.nn.functional.normalize(x @ w.T, dim=1)
    emb, labels, world = gather_batch(emb, labels)
    trip = SemiHardMiner()(emb, labels)
    loss, _ = TripletLoss(0.2)(emb, trip)
    (loss * world).backward()
    grad = w.grad.clone()
    if world > 1:  # what DDP does: average the gradients over ranks
        dist.all_reduce(grad)
        grad /= world
    return [t.numpy() for t in trip], float(loss), grad.numpy()


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x, labels, w = _data()
    half = B // world
    trip, loss, grad = _step(x[rank * half : (rank + 1) * half], labels[rank * half : (rank + 1) * half], w)
    np.savez(os.path.join(out_dir, f"rank{rank}.npz"), a=trip[0], p=trip[1], n=trip[2], loss=loss, grad=grad)
    dist.destroy_process_group()


def _run_ranks(fn, args) -> None:
    """2 processes running ``fn(rank, *args)``, forked from this one (already holding torch: no second ~8 s of
    imports as with spawn); each keeps one thread, so no OpenMP state crosses the fork."""

    def one_thread(rank, *a):
        torch.set_num_threads(1)
        fn(rank, *a)

    mp.start_processes(one_thread, args=args, nprocs=2, join=True, start_method="fork")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_equal_one_process(tmp_path):
    x, labels, w = _data()
    trip1, loss1, grad1 = _step(x, labels, w)
    _run_ranks(_worker, (2, _free_port(), str(tmp_path)))
    for rank in range(2):
        r = np.load(tmp_path / f"rank{rank}.npz")
        got = sorted(zip(r["a"].tolist(), r["p"].tolist(), r["n"].tolist()))
        assert got == sorted(zip(*(t.tolist() for t in trip1)))
        assert float(r["loss"]) == np.float64(loss1).item() or abs(float(r["loss"]) - loss1) < 1e-12
        np.testing.assert_allclose(r["grad"], grad1, rtol=1e-10, atol=1e-12)
    assert len(trip1[0]) > 0 and np.abs(grad1).sum() > 0


def test_without_process_group_gather_is_the_identity():
    e, lab = torch.randn(5, 3), torch.arange(5)
    ge, gl, world = gather_batch(e, lab)
    assert ge is e and gl is lab and world == 1


# -- the same claim through FaceNetModule.training_step (the code train.py runs) --------------------------


def _module(norm_layer: str):
    from facenet_pl.training.module import FaceNetModule

    torch.manual_seed(0)  # identical initial weights in every process
    m = FaceNetModule(
        backbone={
            "name": "facenet_small",
            "input_size": 32,
            "kwargs": {"widths": [8, 8, 8, 8], "norm_layer": norm_layer},
        },
        model={"embedding_dim": 8, "channels_last": False},
        augment={"ops": {}},
        miner={"_target_": "facenet_pl.mining.SemiHardMiner", "cross_rank": True},
        loss={"_target_": "facenet_pl.losses.TripletLoss"},
        optimizer={"_target_": "torch.optim.SGD", "lr": 0.1},
    )
    m.log = lambda *a, **k: None  # no trainer attached
    return m


def _images():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (B, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(6).repeat_interleave(4)[torch.randperm(B, generator=g)]
    return images, labels


def _module_step(m, images, labels):
    """training_step + backward; the loss it returns is scaled by the world size (see cross_rank.py)."""
    m.zero_grad()
    m.train()
    out = m.training_step((images, labels, torch.arange(len(labels))), 0)
    out.backward()
    world = dist.get_world_size() if dist.is_initialized() else 1
    grads = torch.cat([p.grad.reshape(-1) for p in m.parameters() if p.grad is not None])
    if world > 1:
        dist.all_reduce(grads)
        grads /= world
    return float(out) / world, grads.numpy()


def _module_worker(rank, world, port, out_dir, norm_layer):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    images, labels = _images()
    half = B // world
    loss, grad = _module_step(
        _module(norm_layer), images[rank * half : (rank + 1) * half], labels[rank * half : (rank + 1) * half]
    )
    np.savez(os.path.join(out_dir, f"{norm_layer}{rank}.npz"), loss=loss, grad=grad)
    dist.destroy_process_group()


def test_training_step_two_ranks_equal_one_process_without_batch_statistics(tmp_path):
    """Holds for per-image normalisation (GroupNorm, LayerNorm, none) or SyncBatchNorm; per-rank BatchNorm
    normalises each half with its own statistics, so the embeddings, triplets and loss change."""
    images, labels = _images()
    for norm in ("groupnorm1", "batchnorm2d"):
        ref_loss, ref_grad = _module_step(_module(norm), images, labels)
        _run_ranks(_module_worker, (2, _free_port(), str(tmp_path), norm))
        for rank in range(2):
            r = np.load(tmp_path / f"{norm}{rank}.npz")
            if norm == "groupnorm1":
                assert float(r["loss"]) == pytest.approx(ref_loss, rel=1e-5)  # float32: summation order only
                np.testing.assert_allclose(r["grad"], ref_grad, rtol=1e-3, atol=1e-6)
            else:  # the documented exception
                assert abs(float(r["loss"]) - ref_loss) > 1e-6 or not np.allclose(r["grad"], ref_grad, rtol=1e-3)
        assert ref_loss > 0 and np.abs(ref_grad).sum() > 0
