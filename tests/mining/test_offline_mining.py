"""Offline mining (``miner.offline.every_n_steps``): sampler, module hook and train.py end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from facenet_pl.data.datasets import InMemoryFaceDataset
from facenet_pl.data.samplers import OfflineTripletSampler, PKSampler
from facenet_pl.mining import SemiHardMiner
from facenet_pl.mining.offline import offline_batch_triplets
from facenet_pl.models.normalization import normalize_images
from facenet_pl.training.module import FaceNetModule
from facenet_pl.utils.errors import ConfigError

from ..helpers import train_error_in_process, train_in_process
from ..references import brute_semihard

LABELS = np.repeat(np.arange(30), 5)  # 30 identities x 5 images
TABLE = np.random.default_rng(0).normal(size=(len(LABELS), 8))  # a fixed "model": one embedding per image


class RecordingMiner:
    """Semi-hard mining on a fixed embedding table, by brute force; records every pool it returns."""

    def __init__(self) -> None:
        self.pools: list[set[tuple[int, int, int]]] = []
        self.subsets: list[np.ndarray] = []

    def __call__(self, idx: np.ndarray):
        trip = brute_semihard(TABLE[idx], LABELS[idx].tolist())
        self.subsets.append(idx)
        self.pools.append({(int(idx[a]), int(idx[p]), int(idx[n])) for a, p, n in trip})
        a, p, n = (np.array(t) for t in zip(*trip))
        return a, p, n


def _sampler(mine, every=3, per_batch=5, batches=7, seed=0, rank=0, world=1):
    subsets = PKSampler(LABELS, p=6, k=3, batches_per_epoch=1, num_replicas=world, rank=rank, seed=seed)
    return OfflineTripletSampler(
        subsets, mine, every_n_steps=every, triplets_per_batch=per_batch, batches_per_epoch=batches, seed=seed
    )


def _triplets(batch: list[int]) -> list[tuple[int, int, int]]:
    a, p, n = (t.tolist() for t in offline_batch_triplets(len(batch)))
    return [(batch[i], batch[j], batch[k]) for i, j, k in zip(a, p, n)]


def test_batches_are_triplets_of_the_latest_mined_pool_refreshed_every_n_steps():
    miner = RecordingMiner()
    s = _sampler(miner, every=3, per_batch=5, batches=7)
    batches = []
    for epoch in range(2):
        s.set_epoch(epoch)
        batches += list(s)
    assert len(batches) == 14 and all(len(b) == 15 for b in batches)
    assert len(miner.pools) == 5  # batches 0, 3, 6, 9, 12 mine a fresh subset (counting across epochs)
    for i, b in enumerate(batches):
        pool = miner.pools[i // 3]
        trips = _triplets(b)
        assert set(trips) <= pool  # every triplet comes from the subset mined for this window
        for a, p, n in trips:
            assert LABELS[a] == LABELS[p] and a != p and LABELS[n] != LABELS[a]
    # within a refresh window the pool (6 ids x 3 images x 2 positives = 36 triplets) is not repeated
    window = [t for b in batches[:3] for t in _triplets(b)]
    assert len(set(window)) == len(window) == 15
    # successive subsets differ (a new subset per refresh)
    assert not np.array_equal(np.sort(miner.subsets[0]), np.sort(miner.subsets[1]))


def test_pool_smaller_than_the_window_is_cycled():
    miner = RecordingMiner()
    s = _sampler(miner, every=10, per_batch=20, batches=4)  # 36 triplets, 80 needed
    batches = list(s)
    assert len(miner.pools) == 1
    used = [t for b in batches for t in _triplets(b)]
    assert set(used) == miner.pools[0]  # every mined triplet used, then cycled


def test_deterministic_per_seed_and_resume_mines_again():
    a, b = list(_sampler(RecordingMiner(), seed=3)), list(_sampler(RecordingMiner(), seed=3))
    assert a == b
    assert a != list(_sampler(RecordingMiner(), seed=4))
    miner = RecordingMiner()
    s = _sampler(miner, every=100, batches=7)
    s.resume(epoch=1, completed_batches=4)
    rest = list(s)
    assert len(rest) == 3 and len(miner.pools) == 1


def test_ranks_mine_disjoint_identities():
    m0, m1 = RecordingMiner(), RecordingMiner()
    list(_sampler(m0, rank=0, world=2)), list(_sampler(m1, rank=1, world=2))
    for s0, s1 in zip(m0.subsets, m1.subsets):
        assert not set(LABELS[s0]) & set(LABELS[s1])


def test_a_miner_that_never_finds_a_triplet_stops_with_a_clear_error():
    empty = np.empty(0, dtype=np.int64)
    calls = []

    def nothing(idx):
        calls.append(idx)
        return empty, empty, empty

    with pytest.raises(ConfigError, match="no triplet in 10 subsets"):
        list(_sampler(nothing))
    assert len(calls) == 10


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="every_n_steps"):
        _sampler(RecordingMiner(), every=0)
    with pytest.raises(ConfigError, match="triplets_per_batch"):
        _sampler(RecordingMiner(), per_batch=0)
    with pytest.raises(ValueError, match="whole triplets"):
        offline_batch_triplets(10)


def test_module_mines_with_current_weights_in_eval_mode_and_restores_train_mode():
    torch.manual_seed(0)
    module = FaceNetModule(
        backbone={"name": "facenet_small", "input_size": 32, "kwargs": {"widths": [8, 8, 8, 8]}},
        model={"embedding_dim": 8},
        miner={"_target_": "facenet_pl.mining.SemiHardMiner", "offline": {"every_n_steps": 5, "embed_batch_size": 7}},
        loss={"_target_": "facenet_pl.losses.TripletLoss"},
        optimizer={"_target_": "torch.optim.AdamW"},
    )
    assert module.offline_mining["every_n_steps"] == 5 and isinstance(module.miner, SemiHardMiner)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(6).repeat_interleave(4)
    bn = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    before = [m.running_mean.clone() for m in bn]
    module.train()
    got = module.mine_offline(images, labels)
    assert module.training  # restored
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bn))  # eval mode: BN stats untouched
    module.eval()
    with torch.no_grad():
        emb = module(normalize_images(images, "fixed")).double().numpy()
    expected = brute_semihard(emb, labels.tolist())
    mined = sorted(zip(*(t.tolist() for t in got)))
    assert [t[:2] for t in mined] == [t[:2] for t in expected]  # every anchor-positive pair
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    # the negative brute force picks (up to float32 near-ties of an untrained net: compare distances)
    np.testing.assert_allclose([d[a, n] for a, _, n in mined], [d[a, n] for a, _, n in expected], atol=1e-5)


def test_offline_mining_and_cross_rank_do_not_combine():
    miner = {"_target_": "facenet_pl.mining.SemiHardMiner", "offline": {"every_n_steps": 5}, "cross_rank": True}
    with pytest.raises(ConfigError, match="cross_rank"):
        FaceNetModule(
            backbone={"name": "facenet_small", "input_size": 32, "kwargs": {"widths": [8, 8, 8, 8]}},
            model={"embedding_dim": 8},
            miner=miner,
            loss={"_target_": "facenet_pl.losses.TripletLoss"},
            optimizer={"_target_": "torch.optim.AdamW"},
        )


def test_train_py_with_offline_mining(tmp_path):
    """Through Trainer.fit (in-process: train.py's code path without a new interpreter)."""
    train_in_process(
        tmp_path,
        "miner.offline.every_n_steps=2",
        "miner.offline.subset_identities=8",
        "miner.offline.images_per_identity=3",
        "miner.offline.triplets_per_batch=5",
        "trainer.max_epochs=2",
        logger=True,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] == 2 * (24 // 4)  # an epoch as long as with online PK batches
    rows = [r for r in csv.DictReader(open(tmp_path / "csv" / "metrics.csv")) if r.get("train/num_triplets")]
    assert rows and all(float(r["train/num_triplets"]) == 5 for r in rows)  # the 5 offline triplets per batch


def test_offline_with_a_bad_subset_size_fails_before_training(tmp_path):
    err = train_error_in_process(tmp_path, "miner.offline.every_n_steps=2", "miner.offline.subset_identities=1")
    assert "miner.offline.subset_identities" in err


def test_dataset_gather_used_by_offline_mining_returns_rows_in_order():
    ds = InMemoryFaceDataset(
        torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).clone(), np.arange(10) % 3
    )
    images, labels, idx = ds.__getitems__([7, 2, 7])
    assert images[:, 0, 0, 0].tolist() == [7, 2, 7] and labels.tolist() == [1, 2, 1] and idx.tolist() == [7, 2, 7]


def test_offline_mining_with_cross_rank_is_one_line_from_train(tmp_path):
    err = train_error_in_process(tmp_path, "miner.offline.every_n_steps=2", "miner.cross_rank=true")
    assert "miner.cross_rank=true do not combine" in err
    assert not (tmp_path / "checkpoints").exists()  # refused before training
