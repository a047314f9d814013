"""Honest evaluation: identity-disjoint train/val/test splits, folds that travel with the pairs, a threshold
that keeps its FAR, eval.py that tests the run's own test split, calibration on a labelled folder."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facenet_pl.cli.main import main as cli
from facenet_pl.data.folder import FolderDataModule
from facenet_pl.data.images import scan_identity_folders
from facenet_pl.data.pairs import fold_count, make_pairs
from facenet_pl.evaluation import evaluate_pairs
from facenet_pl.evaluation.verification import kfold_accuracy, threshold_at_far
from facenet_pl.inference.embed import load_model
from facenet_pl.utils.errors import ConfigError

from ..helpers import eval_in_process, run_script, train_in_process, write_face_folders


@pytest.mark.parametrize("seed", range(4))
def test_threshold_at_far_is_the_most_permissive_threshold_within_the_target(seed):
    """Brute force: with "same iff d < t", FAR(t) <= target exactly when t <= the (m+1)-th smallest different
    distance, m = floor(target * n_diff). The threshold must keep the target on the pairs it is fit on and
    accept every pair that bound accepts (davidsandberg/facenet's interpolation overshoots the target)."""
    rng = np.random.default_rng(seed)
    s = rng.random(700) < 0.4
    d = np.round(np.where(s, rng.normal(0.8, 0.3, 700), rng.normal(1.4, 0.3, 700)), 2)  # ties
    diff = np.sort(d[~s])
    for target in (1e-3, 1 / 300, 0.01, 0.05, 0.2, 0.5):
        t = threshold_at_far(d, s, target)
        assert np.mean(diff < t) <= target + 1e-12, target
        m = int(np.floor(target * len(diff) + 1e-9))
        bound = diff[m] if m < len(diff) else np.inf
        assert t <= bound and not np.any((d >= t) & (d < bound)), target


def test_evaluate_pairs_reports_the_achieved_far_and_a_95_interval():
    rng = np.random.default_rng(0)
    folds = np.repeat(np.arange(10), 60)
    s = np.tile(np.r_[np.ones(30, bool), np.zeros(30, bool)], 10)
    d = np.where(s, rng.normal(0.9, 0.35, 600), rng.normal(1.5, 0.35, 600))
    res = evaluate_pairs(d, s, far_target=0.05, folds=folds)
    accs, fars = [], []
    for f in range(10):  # independent re-computation: numpy, per fold, thresholds from the other folds
        test, fit = folds == f, folds != f
        cand = np.r_[-1.0, np.sort(d[fit]), 10.0]
        acc_fit = [np.mean((d[fit] < c) == s[fit]) for c in cand]
        best = cand[int(np.argmax(acc_fit))]
        lo = np.sort(d[fit])  # the accuracy is constant between distances: any threshold in that gap scores the same
        nxt = lo[lo > best][0] if np.any(lo > best) else best + 1
        accs.append(np.mean((d[test] < (best + nxt) / 2) == s[test]))
        diff_fit = np.sort(d[fit & ~s])
        t = threshold_at_far(d[fit], s[fit], 0.05)
        assert np.mean(diff_fit < t) <= 0.05
        fars.append(np.mean(d[test & ~s] < t))
    assert res["accuracy"] == pytest.approx(np.mean(accs), abs=1e-12)
    assert res["far"] == pytest.approx(np.mean(fars), abs=1e-12)
    half = 2.2621571627409915 * np.std(accs, ddof=1) / np.sqrt(10)  # Student t, 9 degrees of freedom, 97.5%
    assert res["accuracy_ci95_low"] == pytest.approx(np.mean(accs) - half, abs=1e-9)
    assert res["accuracy_ci95_high"] == pytest.approx(np.mean(accs) + half, abs=1e-9)
    assert res["folds"] == 10


def test_folds_travel_with_the_pairs_not_with_their_order():
    """5 folds of pairs: scoring by the fold ids differs from cutting the list into 10 chunks, which puts only
    matched or only mismatched pairs in a chunk (the eval.py bug); each fold's identities are its own."""
    labels = np.repeat(np.arange(30), 4)
    pairs, same, folds = make_pairs(labels, n_folds=5, pairs_per_fold=20, seed=0)
    assert sorted(np.unique(folds)) == list(range(5))
    ids = [set(labels[pairs[folds == f].ravel()]) for f in range(5)]
    assert all(not ids[i] & ids[j] for i in range(5) for j in range(i))
    chunks = np.array_split(np.arange(len(pairs)), 10)
    assert all(same[c].all() or not same[c].any() for c in chunks)  # why chunking by position is wrong
    assert all(same[folds == f].sum() == 20 and (~same[folds == f]).sum() == 20 for f in range(5))


def test_fold_count_lowers_the_folds_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        assert fold_count(9, 10, "test identities") == 4
    assert "9 identities allow 4 verification folds" in caplog.text
    assert fold_count(40, 10, "x") == 10
    with pytest.raises(ValueError, match="4 identities are the minimum"):
        fold_count(3, 10, "x")


def test_kfold_ci_is_nan_for_a_single_tested_fold():
    d, s = np.r_[0.1, 0.2, 0.9, 1.0], np.array([True, True, False, False])
    res = kfold_accuracy(d, s, folds=np.array([0, 0, 1, 1]), test_folds=[1])
    assert res["folds"] == 1 and np.isnan(res["accuracy_ci95_low"])


def test_folder_splits_are_identity_disjoint_and_cover_the_folder(tmp_path):
    root = write_face_folders(tmp_path / "faces", 14, 3)
    args = dict(root=str(root), image_size=32, cache_dir=None, decode_workers=0, p=2, k=2, val_pairs_per_fold=5)
    dm = FolderDataModule(**args, val_identities=4, test_identities=0.25)  # 0.25 x 14 = 3.5 -> 4
    dm.setup("fit")
    names = sorted(p.name for p in root.iterdir())
    train = {names[int(i)] for i in torch.unique(dm.train_set.labels)}
    val, test = set(dm.val_split.identities), set(dm.test_split.identities)
    assert len(val) == len(test) == 4 and len(train) == 6
    assert not (train & val or train & test or val & test) and train | val | test == set(names)
    assert dm.identity_splits() == {"val": sorted(val), "test": sorted(test)}
    assert len(np.unique(dm.val_split.folds)) == 2  # 4 identities: 2 folds of 2, not 10
    whole = dm.whole_folder_split()
    assert set(whole.identities) == set(names) and len(np.unique(whole.folds)) == 7
    with pytest.raises(ConfigError, match="split=all"):
        FolderDataModule(**args, val_identities=7, test_identities=6).setup("fit")
    none = FolderDataModule(**args, val_identities=0, test_identities=4)
    none.setup("fit")
    assert none.val_split is None and none.val_dataloader() == []


FOLDER_RUN = [
    "data=folder",
    "data.val_identities=4",
    "data.test_identities=4",
    "data.val_folds=10",
    "data.val_pairs_per_fold=6",
    "data.p=4",
    "data.k=2",
    "data.cache_dir=null",
    "data.decode_workers=0",
    "backbone.kwargs.widths=[8,16,16,32]",
    "trainer.max_epochs=2",
    "callbacks.progress_bar.refresh_rate=0",
]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("honest")
    root = write_face_folders(base / "faces", 14, 4)
    metrics = train_in_process(base / "run", *FOLDER_RUN, f"data.root={root}", logger=True, tiny=False)
    return base, root, metrics


def test_the_best_checkpoint_is_chosen_on_validation_and_tested_on_other_people(folder_run):
    base, root, metrics = folder_run
    rows = (base / "run" / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    vals = [float(r.split(",")[header.index("val/acc")]) for r in rows[1:] if r.split(",")[header.index("val/acc")]]
    assert len(vals) == 2 and metrics["best/val/acc"] == pytest.approx(max(vals))
    assert metrics["test/checkpoint"] == metrics["best_model_path"]
    ckpt = torch.load(metrics["best_model_path"], map_location="cpu", weights_only=True)
    run = ckpt["facenet_pl"]
    assert run["data"]["root"] == str(root) and run["calibration"]["split"] == "val"
    val, test = set(run["identity_splits"]["val"]), set(run["identity_splits"]["test"])
    assert len(val) == len(test) == 4 and not val & test
    # Independent re-computation of test/acc: embed the test people's images with the best weights and score
    # the test pairs with their fold ids.
    dm = FolderDataModule(
        root=str(root),
        image_size=64,
        cache_dir=None,
        decode_workers=0,
        val_identities=4,
        test_identities=4,
        val_pairs_per_fold=6,
        p=4,
        k=2,
        seed=42,
    )
    dm.setup("test")
    split = dm.test_split
    assert set(split.identities) == test
    model = load_model(metrics["best_model_path"])
    emb = model.embed(split.dataset.__getitems__(list(range(len(split.dataset))))[0]).double().numpy()
    d = ((emb[split.pairs[:, 0]] - emb[split.pairs[:, 1]]) ** 2).sum(1)
    # test/acc: every test pair at the threshold the validation people chose (one meaning for every data module,
    # as for LFW); the k-fold figure, each fold at the other test folds' threshold, under its own name
    thr = float(model.threshold)
    assert run["calibration"]["split"] == "val" and np.isfinite(thr)
    assert metrics["test/acc"] == pytest.approx(np.mean((d < thr) == split.issame), abs=1e-5)
    assert metrics["test/threshold"] == pytest.approx(thr)
    per_fold = [np.mean((d[split.folds == f] < thr) == split.issame[split.folds == f]) for f in (0, 1)]
    assert metrics["test/acc_std"] == pytest.approx(np.std(per_fold), abs=1e-5)
    ref = evaluate_pairs(d, split.issame, folds=split.folds)
    assert metrics["test/acc_other_folds_threshold"] == pytest.approx(ref["accuracy"], abs=1e-5)
    assert metrics["test/folds"] == 2 and metrics["test/identities"] == 4 and metrics["test/pairs"] == 2 * 12
    assert "val/far" in header and "test/far" in metrics


def test_eval_py_knows_the_run(folder_run, tmp_path, caplog):
    base, root, metrics = folder_run
    best = metrics["best_model_path"]
    res = eval_in_process(best, tmp_path / "test")  # no data options: the run's own test split
    assert res["same_data_as_training"] and res["split"] == "test"
    assert res["accuracy"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert res["accuracy"] == res["acc_at_model_threshold"] and res["threshold_from"].startswith("validation people")
    assert res["accuracy_other_folds_threshold"] == pytest.approx(metrics["test/acc_other_folds_threshold"], abs=1e-6)
    assert (res["pairs"], res["identities"], res["folds"]) == (24, 4, 2)
    assert res["model_calibrated_on"].startswith("validation identities of")
    assert json.loads((tmp_path / "test" / "eval_metrics.json").read_text())["accuracy"] == res["accuracy"]
    val = eval_in_process(best, tmp_path / "val", "split=val")  # the number the checkpoint was chosen by
    assert val["accuracy"] == pytest.approx(metrics["best/val/acc"], abs=1e-6)
    flipped = eval_in_process(best, tmp_path / "flip", "flip=true")
    assert flipped["flip"] is True and flipped["model_flip"] is False

    # A folder of people the model never saw: every identity is a test identity; folds as the people allow.
    new = write_face_folders(tmp_path / "new", 6, 3, seed=11)
    with caplog.at_level(logging.WARNING):
        res = eval_in_process(
            best,
            tmp_path / "all",
            "data=folder",
            f"data.root={new}",
            "data.cache_dir=null",
            "data.decode_workers=0",
            "split=all",
        )
    assert res["identities"] == 6 and res["folds"] == 3 and not res["same_data_as_training"]
    assert "k-fold" in res["threshold_from"]  # other people: the data's own k-fold protocol, not the stored threshold
    assert "allow 3 verification folds" in caplog.text
    assert "trained on" not in caplog.text  # new people: no warning that they may have been trained on
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # split=all on the training folder itself: said, the result is optimistic
        eval_in_process(best, tmp_path / "own", "data=folder", f"data.root={root}", "data.cache_dir=null", "split=all")
    assert "the folder the model was trained on" in caplog.text

    # Other data's "test" split: the warning names how it differs from the training data (docs/evaluation.md)
    other = write_face_folders(tmp_path / "other", 12, 3, seed=12)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        res = eval_in_process(
            best,
            tmp_path / "other_run",
            "data=folder",
            f"data.root={other}",
            "data.cache_dir=null",
            "data.decode_workers=0",
            "data.val_identities=4",
            "data.test_identities=4",
        )
    assert not res["same_data_as_training"] and "k-fold" in res["threshold_from"]
    warned = [r.getMessage() for r in caplog.records if "differs from the training data" in r.getMessage()]
    assert len(warned) == 1 and "data.root" in warned[0] and "data.test_identities" not in warned[0]

    # The training folder changed since: its "test" people are no longer the ones held out in training.
    test_people = torch.load(best, map_location="cpu", weights_only=True)["facenet_pl"]["identity_splits"]["test"]
    shutil.rmtree(root / test_people[0])
    with pytest.raises(ConfigError, match="differ from the 4 recorded"):
        eval_in_process(best, tmp_path / "changed")


def _brute_best_threshold(d: np.ndarray, s: np.ndarray) -> float:
    """The accuracy-maximising threshold by trying every midpoint (smallest on ties)."""
    u = np.unique(d)
    cand = np.r_[u[0] - 1e-6, (u[1:] + u[:-1]) / 2, u[-1] + 1e-6]
    accs = [np.mean((d < c) == s) for c in cand]
    return float(cand[int(np.argmax(accs))])


def test_calibrate_fits_the_threshold_on_a_folder_and_writes_a_new_model(folder_run, tmp_path, capsys):
    _, _, metrics = folder_run
    best = metrics["best_model_path"]
    before = hashlib.sha256(open(best, "rb").read()).hexdigest()
    people = write_face_folders(tmp_path / "people", 8, 3, seed=5)
    out = tmp_path / "calibrated.ckpt"
    assert cli(["calibrate", best, str(people), "-o", str(out), "--pairs-per-fold", "10"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["identities"] == 8 and res["folds"] == 4 and res["pairs"] == 4 * 20
    # Independent: embed the files, rebuild the pairs, search every midpoint.
    model = load_model(best)
    paths, labels, _ = scan_identity_folders(people)
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths])
    emb = model.embed(x).double().numpy()
    pairs, same, _ = make_pairs(labels, 4, 10, 0)
    d = ((emb[pairs[:, 0]] - emb[pairs[:, 1]]) ** 2).sum(1)
    assert res["threshold"] == pytest.approx(_brute_best_threshold(d, same), abs=1e-5)
    calibrated = load_model(out)
    assert float(calibrated.threshold) == pytest.approx(res["threshold"], abs=1e-6)
    assert calibrated.calibration["on"] == str(people.resolve())
    assert hashlib.sha256(open(best, "rb").read()).hexdigest() == before  # the original is untouched
    img = sorted((people / "person0").iterdir())
    assert cli(["verify", str(out), str(img[0]), str(img[1])]) == 0
    assert json.loads(capsys.readouterr().out)["calibrated_on"] == str(people.resolve())
    assert cli(["verify", best, str(img[0]), str(img[1])]) == 0
    assert json.loads(capsys.readouterr().out)["calibrated_on"].startswith("validation identities of")
    assert cli(["calibrate", best, str(people), "-o", str(out)]) == 2  # never overwrites
    assert "not overwriting" in capsys.readouterr().err
    st = tmp_path / "calibrated.safetensors"
    assert cli(["calibrate", best, str(people), "-o", str(st), "--far-target", "0.01"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert float(load_model(st).threshold) == pytest.approx(res["threshold"], abs=1e-6)
    assert np.mean(d[~same] < res["threshold"]) <= 0.01


def test_eval_writes_only_where_this_run_says(folder_run, tmp_path):
    """A checkpoint handed over with a data config whose cache_dir points elsewhere: eval.py writes its index and
    cache under this run's paths.cache_dir, nothing where the file says."""
    from facenet_pl.inference.model_files import read_checkpoint
    from facenet_pl.training.checkpoint_io import atomic_torch_save

    _, _, metrics = folder_run
    ckpt = read_checkpoint(metrics["best_model_path"])
    elsewhere = tmp_path / "named_by_the_file"
    ckpt["facenet_pl"]["data"]["cache_dir"] = str(elsewhere)
    # the run's folder, rendered again (another test of this module removes one of its people)
    ckpt["facenet_pl"]["data"]["root"] = str(write_face_folders(tmp_path / "faces", 14, 4))
    handed = tmp_path / "handed.ckpt"
    atomic_torch_save(ckpt, handed)
    root = ckpt["facenet_pl"]["data"]["root"]  # outside a run folder: the user names the data (see the next test)
    res = eval_in_process(handed, tmp_path / "eval", f"paths.cache_dir={tmp_path / 'mine'}", f"+data.root={root}")
    assert res["identities"] == 4
    assert not elsewhere.exists() and any((tmp_path / "mine").glob("index-*"))


def test_a_handed_checkpoint_does_not_choose_what_eval_reads(folder_run, tmp_path):
    """A checkpoint whose stored data.root names another folder (the report: /etc, ~635 files listed and opened,
    an index and an image cache of it written) is refused in one line before anything is listed, unless the run
    folder it sits in recorded that root (.hydra/config.yaml); the run's own checkpoint, moved with its folder,
    still evaluates with no data options."""
    from facenet_pl.inference.model_files import read_checkpoint
    from facenet_pl.training.checkpoint_io import atomic_torch_save

    base, _, metrics = folder_run
    secret = write_face_folders(tmp_path / "secret", 14, 4)  # readable faces: nothing but the rule refuses them
    ckpt = read_checkpoint(metrics["best_model_path"])
    ckpt["facenet_pl"]["data"]["root"] = str(secret)
    cache = tmp_path / "cache"
    for handed in (tmp_path / "handed.ckpt", base / "run" / "checkpoints" / "steered.ckpt"):  # alone; in a run folder
        atomic_torch_save(ckpt, handed)
        with pytest.raises(ConfigError, match=rf"data.root={secret}.*not read on the file's word.*\+data.root="):
            eval_in_process(handed, tmp_path / "eval", f"paths.cache_dir={cache}")
        assert not cache.exists()  # nothing listed, indexed or cached
    (base / "run" / "checkpoints" / "steered.ckpt").unlink()
    out = run_script("eval.py", tmp_path / "cli", f"ckpt_path={tmp_path / 'handed.ckpt'}", f"paths.cache_dir={cache}")
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 1 and "Traceback" not in out.stderr and "not read on the file's word" in lines[-1]
    assert not cache.exists()

    moved = tmp_path / "moved"  # the run folder moved elsewhere: its record moves with it and still vouches
    shutil.copytree(base / "run", moved)
    best = moved / "checkpoints" / Path(metrics["best_model_path"]).name
    write_face_folders(base / "faces", 14, 4)  # the run's folder as trained on (another test removes a person)
    res = eval_in_process(best, tmp_path / "own", f"paths.cache_dir={cache}")
    assert res["same_data_as_training"] and res["identities"] == 4


def test_eval_refuses_backbone_overrides(folder_run, tmp_path):
    from facenet_pl.run.evaluate import evaluate

    from ..helpers import compose_in_process

    _, _, metrics = folder_run
    for override in ("+backbone.name=resnet18", "backbone.input_size=32"):
        cfg = compose_in_process("eval", tmp_path, [f"ckpt_path={metrics['best_model_path']}", override])
        with pytest.raises(ConfigError, match=rf"{override.lstrip('+').split('=')[0]} cannot change it"):
            evaluate(cfg)


@pytest.mark.parametrize(
    "meta",
    [
        "[]",
        "null",
        '{"format": "facenet_pl.embedding/1"}',
        "not json",
        '{"format": "facenet_pl.embedding/1", "backbone": [], "model": {}}',
    ],
)
def test_a_safetensors_file_with_bad_metadata_is_one_line(folder_run, tmp_path, meta):
    from safetensors.torch import load_file, save_file

    from ..helpers import run_cli

    _, root, metrics = folder_run
    good = tmp_path / "good.safetensors"
    assert run_cli("export", metrics["best_model_path"], "-o", good).returncode == 0
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(good)), str(bad), metadata={"facenet_pl": meta})
    out = run_cli("embed", bad, root, "-o", tmp_path / "e.npy")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "not a facenet-pl model" in out.stderr, out.stderr
    with pytest.raises(ConfigError, match="not a facenet-pl model"):
        eval_in_process(bad, tmp_path / "eval", "data=folder", f"data.root={root}", "split=all")
