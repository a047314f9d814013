"""DDP end to end: train.py with trainer=ddp on 2 CPU processes (gloo)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from facenet_pl.evaluation import evaluate_pairs
from facenet_pl.inference.embed import embed_dataset, load_model

from ..helpers import SMALL_IDENTITY_DATA, TINY, read_batches, run_script, tiny_labels, write_face_folders


def _folder_overrides(tmp_path) -> list[str]:
    """32 people x 4 PNG files; 4 held out for validation and 4 for the test: 24 to train on, as TINY has."""
    faces = write_face_folders(tmp_path / "faces", 32, 4)
    return ["data=folder", f"data.root={faces}", f"data.cache_dir={tmp_path / 'cache'}", *SMALL_IDENTITY_DATA]


def _rec_overrides(tmp_path) -> list[str]:
    """The same people as one insightface RecordIO set (JPEG records), read by one DataLoader worker per rank; trained
    with loss=arcface, its class weights checked against pytorch-metric-learning on the concatenated batch
    (tests/losses/test_losses.py:check_ddp_reference)."""
    from ..data.test_recordio import _faces
    from ..rec_writer import encode_image, write_rec

    x, y = _faces(32, 4)
    write_rec(tmp_path / "rec", [encode_image(i, "jpeg") for i in x], y, size=64)
    return [
        "data=rec",
        f"data.root={tmp_path / 'rec'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        *SMALL_IDENTITY_DATA,
        "data.cache=false",
        "data.num_workers=1",
        "loss=arcface",
        "augment=none",
        "+callbacks.ref._target_=tests.losses.test_losses.ReferenceLoss",
        f"+callbacks.ref.path={tmp_path / 'ref.jsonl'}",
    ]


# data=folder (with one decoded-image cache that both ranks use) runs in CI; the built-in data and
# cross_rank=true through train.py are slow-marked (tests/mining/test_cross_rank.py covers cross_rank's exactness in
# CI).
@pytest.mark.parametrize(
    "data,cross_rank",
    [
        ("folder", False),
        ("rec", False),
        pytest.param("synthetic", False, marks=pytest.mark.slow),
        pytest.param("synthetic", True, marks=pytest.mark.slow),
    ],
)
def test_ddp_trains_and_validation_equals_one_process_on_the_checkpoint(tmp_path, data, cross_rank):
    rec = tmp_path / "batches.jsonl"
    out = run_script(
        "train.py",
        tmp_path,
        *{"folder": _folder_overrides, "rec": _rec_overrides}.get(data, lambda _: TINY)(tmp_path),
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        *([f"miner.cross_rank={str(cross_rank).lower()}"] if data != "rec" else []),
        "+callbacks.record._target_=tests.helpers.RecordBatches",
        f"+callbacks.record.path={rec}",
        timeout=600,
        new_process=True,  # Lightning's DDP launcher starts the other rank by re-running the script
    )
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # 24 identities, P=4 per rank and 2 ranks: 3 global steps per epoch (each rank draws its own identities)
    assert metrics["global_step"] == 2 * 24 // (4 * 2)
    cfg = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    dm = instantiate(cfg.data)
    dm.setup("fit")
    labels = dm.train_set.labels.numpy()
    if data == "folder":
        # One cache, built once (prepare_data on one process; a lock makes any other builder wait) and
        # opened by both ranks, and by the single process above: no second build, nothing half-written left.
        log = out.stdout + out.stderr
        assert log.count("building the decoded-image cache") == 1, log[-3000:]
        cache = tmp_path / "cache"
        assert len(list(cache.glob("images-*.npy"))) == 1 and len(list(cache.glob("meta-*.json"))) == 1
        assert not list(cache.glob("*.partial")) and not list(cache.glob("progress-*"))
    elif data == "synthetic":
        assert np.array_equal(labels, tiny_labels())
    else:  # rec, trained with loss=arcface
        from ..losses.test_losses import check_ddp_reference

        check_ddp_reference(tmp_path / "ref.jsonl")

    # What each rank trained: in every step the ranks' identities are disjoint and together cover 2 x P;
    # every epoch covers all 24 training identities and differs from the other epoch on each rank.
    rows = read_batches(rec)
    batches = {(r["rank"], r["epoch"], r["batch_idx"]): labels[r["idx"]] for r in rows}
    assert len(batches) == 2 * 2 * 3
    for epoch in (0, 1):
        ids = []
        for b in range(3):
            r0, r1 = set(batches[0, epoch, b]), set(batches[1, epoch, b])
            assert len(r0) == len(r1) == 4 and not r0 & r1
            ids += [*r0, *r1]
        assert sorted(ids) == sorted(np.unique(labels)) and len(ids) == 24
    for rank in (0, 1):
        e0 = [r["idx"] for r in rows if r["rank"] == rank and r["epoch"] == 0]
        e1 = [r["idx"] for r in rows if r["rank"] == rank and r["epoch"] == 1]
        assert e0 != e1

    # The val/acc the 2 ranks logged (each embedded half of the validation images) must equal a
    # single-process evaluation of the saved weights on the whole validation set.
    dm.setup("validate")
    module = load_model(tmp_path / "checkpoints" / "last.ckpt")
    emb = embed_dataset(module, dm.val_split.dataset).numpy().astype(np.float64)
    pairs = dm.val_split.pairs
    d = ((emb[pairs[:, 0]] - emb[pairs[:, 1]]) ** 2).sum(1)
    ref = evaluate_pairs(d, dm.val_split.issame, folds=dm.val_split.folds)
    assert metrics["val/acc"] == pytest.approx(ref["accuracy"], abs=1e-6)
    assert metrics["val/auc"] == pytest.approx(ref["auc"], abs=1e-4)

    # After fit, the 2 ranks tested the best checkpoint (each embedding half of the test people's images):
    # the test accuracy equals a single-process evaluation of that checkpoint on the whole test split.
    dm.setup("test")
    best = load_model(metrics["best_model_path"])
    assert metrics["test/checkpoint"] == metrics["best_model_path"]
    emb = embed_dataset(best, dm.test_split.dataset).numpy().astype(np.float64)
    pairs = dm.test_split.pairs
    d = ((emb[pairs[:, 0]] - emb[pairs[:, 1]]) ** 2).sum(1)
    ref = evaluate_pairs(d, dm.test_split.issame, folds=dm.test_split.folds)
    assert metrics["test/acc_other_folds_threshold"] == pytest.approx(ref["accuracy"], abs=1e-6)
    thr = float(best.threshold)  # test/acc: every test pair at the threshold the validation people chose
    assert metrics["test/acc"] == pytest.approx(np.mean((d < thr) == dm.test_split.issame), abs=1e-6)
