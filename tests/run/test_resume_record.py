"""A run's record cannot lie (issue 29): a resume continues the run with its own config (the README's command
names only the run directory), changes only what may change and refuses the rest in one line, never rewrites the
run's original record, and only one train.py works in a run directory at a time. Through train.py's own entry
point (``run_entry``: argument parsing, Hydra's run directory and record, exit codes)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ..helpers import ENV, ROOT, TINY, run_entry

INTERRUPT = ["+callbacks.stop._target_=tests.helpers.InterruptAt", "+callbacks.stop.step=9"]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A 3-epoch run (6 steps an epoch) stopped by Ctrl-C at step 9, in its second epoch."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    r = run_entry("train.py", *TINY, "trainer.max_epochs=3", "seed=5", *INTERRUPT, f"hydra.run.dir={run}")
    assert r.returncode == 130 and (run / "checkpoints" / "last.ckpt").is_file(), r.stderr[-2000:]  # as a shell says
    return run


@pytest.fixture()
def interrupted(stopped, tmp_path):
    """A copy of the stopped run for a test to resume (its config names the run folder only by interpolation)."""
    import shutil

    return shutil.copytree(stopped, tmp_path / "run")


def test_the_readme_resume_command_continues_the_same_run(interrupted):
    """``python train.py hydra.run.dir=<run> ckpt_path=last``: the run ends after its own 3 epochs (not the default
    12) on its own data and seed; its original record is untouched and the resume's goes to .hydra/resume-1."""
    run = interrupted
    original = {name: _digest(run / ".hydra" / name) for name in ("config.yaml", "overrides.yaml")}
    tree = _digest(run / "config_tree.txt")
    r = run_entry("train.py", f"hydra.run.dir={run}", "ckpt_path=last")
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["global_step"] == 18
    assert metrics["test/identities"] == 20  # TINY's test people: the run's data, not the default data
    assert {name: _digest(run / ".hydra" / name) for name in original} == original
    assert _digest(run / "config_tree.txt") == tree
    resumed = yaml.safe_load((run / ".hydra" / "resume-1" / "overrides.yaml").read_text())
    assert resumed == ["ckpt_path=last"]  # (hydra.* overrides go to its hydra.yaml)
    assert (run / ".hydra" / "resume-1" / "config_tree.txt").is_file()
    # the learning rate ended where the uninterrupted 3-epoch run's schedule ends (it once climbed again)
    ref = interrupted.parent / "reference"
    assert (
        run_entry("train.py", *TINY, "trainer.max_epochs=3", "seed=5", "test=false", f"hydra.run.dir={ref}").returncode
        == 0
    )

    def final_lr(folder):
        ckpt = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        return ckpt["optimizer_states"][0]["param_groups"][0]["lr"]

    assert final_lr(run) == pytest.approx(final_lr(ref), rel=1e-9) and final_lr(run) < 1e-4


REFUSED = [
    ("seed=7", "seed=7 (the run's: 5)"),
    ("data.p=8", "data.p=8 (the run's: 4)"),
    ("loss.margin=0.5", "loss.margin=0.5 (the run's: 0.2)"),
    ("model.embedding_dim=64", "model.embedding_dim=64 (the run's: 128)"),
    ("optimizer.lr=1e6", "optimizer.lr=1000000.0 (the run's: 0.003)"),
    ("backbone=resnet18", "backbone.name='resnet18' (the run's: 'facenet_small')"),
]


def test_a_changed_setting_on_resume_is_refused_in_one_line(interrupted):
    """seed would re-draw the held-out people, data/loss/network/optimiser settings make another run: each is one
    line naming the key, its value and the run's, before anything is decoded or written."""
    run = interrupted
    before = {p: _digest(p) for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    folders = sorted(p for p in run.rglob("*") if p.is_dir())
    for override, named in REFUSED:
        r = run_entry("train.py", f"hydra.run.dir={run}", "ckpt_path=last", override)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 1 and len(lines) == 1 and named in lines[0], (override, r.stderr[-2000:])
        assert "settings the run was not started with" in lines[0]
    # a refusal leaves no trace: no .hydra/resume-N record of a resume that never ran, no line in train.log
    assert {p: _digest(p) for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == before
    assert sorted(p for p in run.rglob("*") if p.is_dir()) == folders


def test_extending_a_run_is_allowed(interrupted):
    run = interrupted
    r = run_entry("train.py", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_epochs=4")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 4


def test_a_second_train_py_in_the_same_run_directory_is_refused_and_touches_nothing(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), *TINY, "trainer.max_epochs=200", f"hydra.run.dir={run}"]
    first = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while not (run / ".hydra" / "config.yaml").is_file():  # the first run has started and holds the lock
            assert first.poll() is None and time.time() < deadline, first.stderr.read().decode()[-2000:]
            time.sleep(0.5)
        record = {p.name: _digest(p) for p in (run / ".hydra").iterdir()}
        r = run_entry("train.py", *TINY, "seed=9", f"hydra.run.dir={run}")
        assert r.returncode == 1 and "another train.py (pid" in r.stderr and "one run per directory" in r.stderr
        assert {p.name: _digest(p) for p in (run / ".hydra").iterdir()} == record
    finally:
        first.kill()
        first.wait()


def test_a_moved_run_folder_keeps_its_best_epoch(tmp_path):
    """A run trained for 2 epochs, its folder moved, then resumed for a third epoch that scores worse: the best
    checkpoint stays the earlier epoch's, found in the new folder, and the test phase tests it. The monitored scores
    are the test's own (0.6, 0.8, 0.4: epoch 1 is best), not whatever a few steps of training happen to give."""
    import shutil

    chosen = [
        "callbacks.model_checkpoint.monitor=chosen/score",
        "+callbacks.score._target_=tests.helpers.ScoreAt",
        "+callbacks.score.scores=[0.6,0.8,0.4]",
    ]
    first = tmp_path / "first"
    r = run_entry("train.py", *TINY, *chosen, "trainer.max_epochs=2", "test=false", f"hydra.run.dir={first}")
    assert r.returncode == 0, r.stderr[-2000:]
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(first, moved)
    r = run_entry(
        "train.py",
        f"hydra.run.dir={moved}",
        "ckpt_path=last",
        "trainer.max_epochs=3",
        "test=true",  # the run was started with test=false: a resume keeps it unless told
        *chosen,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((moved / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["best/chosen/score"] == pytest.approx(0.8)
    best = Path(metrics["best_model_path"])
    assert best.parent == moved / "checkpoints" and best.name.startswith("epoch001-")
    assert metrics["test/checkpoint"] == metrics["best_model_path"]
    assert sorted(p.name for p in best.parent.iterdir()) == [best.name, "last.ckpt"]


def _val_rows(run) -> dict[int, dict[str, float]]:
    import csv

    rows = csv.DictReader(open(run / "csv" / "metrics.csv"))
    keys = ("step", "val/acc", "val/threshold", "val/auc", "val/pairs")
    return {int(float(r["epoch"])): {k: float(r[k]) for k in keys} for r in rows if r.get("val/acc")}


def test_sigterm_during_validation_exits_143_and_the_resume_validates_that_epoch_again(tmp_path):
    """SIGTERM (a scheduler's, ``kill``) in the middle of epoch 0's validation: the run exits 143, as a shell reports
    it (Lightning's own status was 0), with last.ckpt saved; the resume validates epoch 0 in full before epoch 1
    (it once skipped it: no best checkpoint, no threshold) and every validation equals an uninterrupted run's."""
    from ..helpers import one_torch_thread, run_entry_in_fork

    common = [*TINY, "trainer.max_epochs=2", "data.val_batch_size=16", "test=false"]  # 4 validation batches
    ref, run = tmp_path / "reference", tmp_path / "run"
    assert run_entry_in_fork("train.py", *common, f"hydra.run.dir={ref}").returncode == 0
    sigterm = ["+callbacks.stop._target_=tests.helpers.SigtermAt", "+callbacks.stop.epoch=0", "+callbacks.stop.batch=1"]
    r = run_entry_in_fork("train.py", *common, *sigterm, f"hydra.run.dir={run}")
    assert r.returncode == 143, r.stderr[-3000:]
    said = r.stdout + r.stderr
    assert "interrupted by SIGTERM at step 6" in said and f"hydra.run.dir={run} ckpt_path=last" in said
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]  # no validation finished
    assert not (run / "metrics.json").exists()  # an interrupted run does not look finished

    with one_torch_thread():  # the same summation order as the forked runs
        r = run_entry("train.py", f"hydra.run.dir={run}", "ckpt_path=last")
    assert r.returncode == 0, r.stderr[-3000:]
    expected, got = _val_rows(ref), _val_rows(run)
    assert sorted(got) == [0, 1] and got[0]["val/pairs"] == 80
    for epoch in (0, 1):
        assert got[epoch] == pytest.approx(expected[epoch], rel=1e-4), epoch
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 12  # epoch 0 was not trained again
    assert metrics["best_model_path"].startswith(str(run / "checkpoints" / "epoch"))
    threshold = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert torch.isfinite(threshold["threshold"])
