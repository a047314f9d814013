"""End to end: the real train.py / eval.py through their own ``@hydra.main`` with tiny settings, in this interpreter
(:func:`tests.helpers.run_entry`: ~10 s of imports less per run). train.py in a new interpreter, as a user starts it:
the W&B sweep test (tests/run/test_experiments.py); eval.py: tests/run/test_loggers.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ..helpers import ROOT, TINY, run_script, run_train  # noqa: F401

#: data=lfw on the generated mini LFW: no crop, no cache, in-process decoding, P=2 x K=2 (add data.root=).
MINI_LFW = ("data=lfw", "data.crop_size=null", "data.cache_dir=null", "data.decode_workers=0", "data.p=2", "data.k=2")


def test_train_writes_checkpoints_metrics_and_logs(tmp_path):
    out = run_train(tmp_path, "trainer.max_epochs=2")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["global_step"] == 2 * (24 // 4)
    assert 0.0 <= metrics["val/acc"] <= 1.0 and "best/val/acc" in metrics
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert Path(metrics["best_model_path"]).is_file()
    # The best checkpoint (chosen on the validation identities) was tested on the test identities.
    assert metrics["test/checkpoint"] == metrics["best_model_path"]
    assert 0.0 <= metrics["test/acc"] <= 1.0 and 10 <= metrics["test/identities"] <= 20
    assert metrics["test/on"].startswith("synthetic test identities")
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    for key in ["train/loss", "train/active_fraction", "train/d_ap", "train/d_an", "train/num_triplets", "val/acc"]:
        assert key in header, key
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    # Lightning's summary counted FLOPs only through an example input and printed 0: ours is one figure with
    # metrics.json's multiply-adds (2 FLOPs each), which tests/run/test_ablations.py checks on a hand-counted network
    from pytorch_lightning.utilities.model_summary import get_human_readable_count

    text = out.stdout + out.stderr
    flops = re.findall(r"Total FLOPs: (\S+(?: [KMGT])?)|^\s*(\S+(?: [KMGT])?)\s+Total Flops", text, re.M)  # rich|plain
    assert metrics["model/macs_per_image"] > 0
    assert ["".join(f) for f in flops] == [get_human_readable_count(int(2 * metrics["model/macs_per_image"]))]


def test_fast_dev_run(tmp_path):
    out = run_train(tmp_path, "trainer.fast_dev_run=true")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] == 1 and 0 < metrics["train/loss"] < 10
    assert not (tmp_path / "checkpoints").exists()  # a smoke run writes no checkpoint


# Each miner trains one step through train.py -m: tests/run/test_ablations.py (experiment=miners).


def test_inception_semihard_composes_and_runs_one_step(tmp_path):
    # Inception v3 needs >= 75 px; 80 px keeps the CPU step short.
    out = run_train(
        tmp_path,
        "backbone=inception",
        "miner=semihard",
        "backbone.input_size=80",
        "data.p=2",
        "data.k=2",
        "trainer.fast_dev_run=true",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] == 1 and metrics["train/num_triplets"] == 2 * 2 * 1  # P x K x (K-1)
    assert 0 < metrics["train/loss"] < 10


def test_bad_config_fails_fast_with_the_key(tmp_path):
    out = run_train(tmp_path, "loss.margin=-1")
    assert out.returncode != 0
    assert "loss.margin must be >= 0" in out.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_eval_py_tests_the_runs_own_test_split_with_its_folds(tmp_path):
    """eval.py on a checkpoint, with no data options, reproduces the test the run did after training: same
    test identities, the folds that travel with the pairs (5 here, not 10 chunks), same flip setting."""
    out = run_train(tmp_path / "train", "trainer.max_epochs=1", "data.val_folds=5")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    ev = run_script("eval.py", tmp_path / "eval", f"ckpt_path={metrics['best_model_path']}")
    assert ev.returncode == 0, ev.stderr[-3000:]
    res = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    for key in [
        "accuracy",
        "accuracy_std",
        "accuracy_ci95_low",
        "val",
        "val_std",
        "far",
        "auc",
        "eer",
        "knn/top1",
        "kmeans/nmi",
    ]:
        assert key in res, key
    assert res["split"] == "test" and res["on"] == metrics["test/on"] and res["same_data_as_training"]
    assert res["folds"] == 5 and res["pairs"] == 5 * 2 * 4
    assert res["identities"] == metrics["test/identities"] <= 20  # the test people the pairs hold
    assert res["accuracy"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert res["auc"] == pytest.approx(metrics["test/auc"], abs=1e-6)
    assert res["flip"] is False and metrics["test/flip"] is False
    assert "VAL @ FAR" in ev.stdout and "95% interval" in ev.stdout and "pairs / identities" in ev.stdout
    assert (tmp_path / "eval" / "roc.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "distances.png").stat().st_size > 1000


def test_train_on_lfw_fold_layout(tmp_path):
    from ..lfw_fixture import make_mini_lfw

    lfw = make_mini_lfw(tmp_path / "lfw")
    out = run_script(
        "train.py",
        tmp_path / "run",
        *MINI_LFW,
        f"data.root={lfw}",
        "data.fold=1",
        "data.val_identities=0",
        "trainer.max_epochs=1",
        "callbacks.progress_bar.refresh_rate=0",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # Independent check of the fold layout: embed the held-out fold with last.ckpt (the final weights: no
    # validation identities, so the last epoch is tested) and score its pairs with the fold ids of pairs.txt.
    import numpy as np
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from facenet_pl.evaluation import evaluate_pairs
    from facenet_pl.inference.embed import embed_dataset, load_model

    cfg = OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml")
    dm = instantiate(cfg.data)
    dm.setup("test")
    assert dm.val_split is None and metrics["test/checkpoint"] == "last epoch"
    split = dm.test_split
    emb = embed_dataset(load_model(tmp_path / "run" / "checkpoints" / "last.ckpt"), split.dataset).numpy()
    d = ((emb[split.pairs[:, 0]] - emb[split.pairs[:, 1]]) ** 2).sum(1)
    folds = np.repeat([0, 1], 4)  # pairs.txt: 2 folds of 2 matched + 2 mismatched pairs
    ref = evaluate_pairs(d, split.issame, folds=folds, test_folds=[1])
    assert metrics["test/acc"] == pytest.approx(ref["accuracy"], abs=1e-6)
    assert "biased" in out.stderr + out.stdout and "data.val_identities > 0" in out.stderr + out.stdout


def test_lfw_fold_is_scored_at_the_validation_threshold_through_train_and_eval(tmp_path):
    """LFW fold=0 with validation people: train.py's test/acc is fold 0's accuracy at the threshold the tested
    checkpoint was calibrated to on validation people (recomputed here from its embeddings), the other folds'
    threshold is reported beside it, and eval.py on that checkpoint gives the same."""
    import numpy as np
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from facenet_pl.evaluation import evaluate_pairs
    from facenet_pl.inference.embed import embed_dataset, load_model

    from ..lfw_fixture import MORE_PEOPLE, make_mini_lfw

    lfw = make_mini_lfw(tmp_path / "lfw", people=MORE_PEOPLE)
    out = run_script(
        "train.py",
        tmp_path / "run",
        *MINI_LFW,
        f"data.root={lfw}",
        "data.fold=0",
        "data.val_identities=4",
        "data.val_folds=2",
        "data.val_pairs_per_fold=4",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    model = load_model(metrics["test/checkpoint"])
    thr = float(model.threshold)
    assert np.isfinite(thr)
    cfg = OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml")
    dm = instantiate(cfg.data)
    dm.setup("test")
    split = dm.test_split
    emb = embed_dataset(model, split.dataset).numpy()
    d = ((emb[split.pairs[:, 0]] - emb[split.pairs[:, 1]]) ** 2).sum(1)
    fold0 = np.arange(8) < 4  # pairs.txt: 2 folds of 2 matched + 2 mismatched pairs
    assert metrics["test/acc"] == pytest.approx(np.mean((d[fold0] < thr) == split.issame[fold0]), abs=1e-6)
    assert metrics["test/threshold"] == pytest.approx(thr)
    ref = evaluate_pairs(d, split.issame, folds=np.repeat([0, 1], 4), test_folds=[0])
    assert metrics["test/acc_other_folds_threshold"] == pytest.approx(ref["accuracy"], abs=1e-6)
    ev = run_script("eval.py", tmp_path / "eval", f"ckpt_path={metrics['test/checkpoint']}")
    assert ev.returncode == 0, ev.stderr[-3000:]
    res = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    assert res["accuracy"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert res["threshold_from"].startswith("validation people") and "biased" in ev.stdout


def test_cv_runs_every_fold_and_reports_mean_and_std(tmp_path):
    from ..lfw_fixture import make_mini_lfw

    lfw = make_mini_lfw(tmp_path / "lfw")
    out = run_script(
        "train.py",
        tmp_path / "run",
        *MINI_LFW,
        f"data.root={lfw}",
        "cv=2",
        "data.val_identities=0",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    )  # (wins over the callbacks' bar)
    assert out.returncode == 0, out.stderr[-3000:]
    cv = json.loads((tmp_path / "run" / "cv_metrics.json").read_text())
    folds = [json.loads((tmp_path / "run" / f"fold_{i}" / "metrics.json").read_text())["test/acc"] for i in (0, 1)]
    assert cv["cv/fold_accuracies"] == folds
    assert abs(cv["cv/accuracy"] - sum(folds) / 2) < 1e-12
    # each fold checkpoints into its own run folder (not all into the parent's, as before 2026-11-30)
    assert all((tmp_path / "run" / f"fold_{i}" / "checkpoints" / "last.ckpt").is_file() for i in (0, 1))
    assert not (tmp_path / "run" / "checkpoints").exists()
