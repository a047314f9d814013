"""Synthetic faces are rendered lazily: only what a batch asks for, identical whatever the order or process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from facenet_pl.data.datasets import collate_batch
from facenet_pl.data.synthetic import SyntheticFaceConfig, SyntheticFaceDataset, generate_split

from ..helpers import train_in_process

CFG = SyntheticFaceConfig(image_size=32)


def test_an_image_does_not_depend_on_what_is_rendered_with_it():
    """Reference: the whole split rendered in order, in chunks; the dataset renders scattered subsets."""
    whole, labels = generate_split(12, 5, seed=3, split="train", cfg=CFG)
    ds = SyntheticFaceDataset(12, 5, seed=3, split="train", cfg=CFG)
    order = np.random.default_rng(0).permutation(len(ds))
    for part in np.array_split(order, 7):  # uneven batches, in random order
        x, y, idx = ds.__getitems__(part.tolist())
        assert torch.equal(x, whole[part]) and torch.equal(y, labels[part]) and idx.tolist() == part.tolist()
    assert ds.rendered == len(ds)
    # Rendering one image alone gives the same pixels as rendering it among 60.
    assert torch.equal(SyntheticFaceDataset(12, 5, 3, "train", CFG).__getitems__([37])[0][0], whole[37])


def test_only_requested_images_are_rendered_and_kept():
    ds = SyntheticFaceDataset(100, 10, seed=0, split="val", cfg=CFG)
    first = ds.__getitems__([5, 7, 5, 900])[0]
    assert ds.rendered == 3
    again = ds.__getitems__([900, 5])[0]
    assert ds.rendered == 3 and torch.equal(again, first[[3, 0]])


def test_images_rendered_in_dataloader_workers_match(tmp_path):
    whole, _ = generate_split(10, 4, seed=1, split="test", cfg=CFG)
    ds = SyntheticFaceDataset(10, 4, seed=1, split="test", cfg=CFG)
    loader = DataLoader(ds, batch_size=16, num_workers=2, collate_fn=collate_batch, multiprocessing_context="spawn")
    ds.__getitems__([0, 1])  # rendered here before the workers start: they must not inherit a half state
    got = torch.cat([x for x, _, _ in loader])
    assert torch.equal(got, whole)
    assert torch.equal(ds.__getitems__(list(range(len(ds))))[0], whole)
    assert ds.rendered == len(ds)


def test_different_seeds_splits_and_identities_differ():
    a, _ = generate_split(3, 2, 0, "train", CFG)
    assert not torch.equal(a, generate_split(3, 2, 1, "train", CFG)[0])
    assert not torch.equal(a, generate_split(3, 2, 0, "val", CFG)[0])
    flat = a.float().flatten(1)
    assert torch.cdist(flat, flat).fill_diagonal_(1e9).min() > 100  # no two images equal


def test_training_renders_only_the_batches_it_trains_on(tmp_path):
    """Through the real Trainer: two training batches render those images, not the 12,000-image training
    set; the validation people are rendered when validation runs, the test people not at all (test=false)."""
    log = tmp_path / "rendered.jsonl"
    train_in_process(
        tmp_path,
        "data.train_identities=1200",
        "data.train_images_per_identity=10",
        "data.val_identities=20",
        "data.val_images_per_identity=10",
        "data.val_pairs_per_fold=10",
        "trainer.limit_train_batches=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.max_epochs=1",
        "test=false",
        "+callbacks.rendered._target_=tests.helpers.RecordRendered",
        f"+callbacks.rendered.path={log}",
        tiny=False,
    )
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    batch = 32 * 8  # the default p x k: distinct images of 32 people
    assert [r["train"] for r in rows[:2]] == [batch, 2 * batch], rows
    assert rows[0]["val"] == 0, "validation images were rendered before validation"
    assert rows[-1] == {"at": "fit_end", "train": 2 * batch, "val": 200, "test": None}, rows[-1]


@pytest.mark.parametrize("bad", [{"keys": torch.zeros(2, dtype=torch.long)}])
def test_render_checks_one_key_per_image(bad):
    from facenet_pl.data.synthetic import identity_params, render_faces

    with pytest.raises(ValueError, match="one key per image"):
        render_faces(identity_params(3, 0), bad["keys"], CFG)
