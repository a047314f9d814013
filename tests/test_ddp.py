"""DDP end to end: train.py with trainer=ddp on 2 CPU processes (gloo)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from facenet_pl.evaluation import evaluate_pairs
from facenet_pl.inference import embed_dataset, load_model

from .test_train_e2e import run_train


# cross_rank=true through train.py is slow-marked: tests/test_cross_rank.py covers its exactness in CI
@pytest.mark.parametrize("cross_rank", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_ddp_trains_and_validation_equals_one_process_on_the_checkpoint(tmp_path, cross_rank):
    out = run_train(tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1",
                    f"mining.cross_rank={str(cross_rank).lower()}", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # 24 identities, P=4 per rank and 2 ranks: 3 global steps per epoch (each rank draws its own identities)
    assert metrics["global_step"] == 24 // (4 * 2)

    # The val/acc the 2 ranks logged (each embedded half of the validation images) must equal a
    # single-process evaluation of the saved weights on the whole validation set.
    cfg = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    dm = instantiate(cfg.data)
    dm.setup("validate")
    module = load_model(tmp_path / "checkpoints" / "last.ckpt")
    emb = embed_dataset(module, dm.val_set).numpy().astype(np.float64)
    pairs = np.asarray(dm.val_pairs)
    d = ((emb[pairs[:, 0]] - emb[pairs[:, 1]]) ** 2).sum(1)
    ref = evaluate_pairs(d, np.asarray(dm.val_issame), n_folds=cfg.data.val_folds)
    assert metrics["val/acc"] == pytest.approx(ref["accuracy"], abs=1e-6)
    assert metrics["val/auc"] == pytest.approx(ref["auc"], abs=1e-4)
