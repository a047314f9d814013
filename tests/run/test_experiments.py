"""Experiments at scale: multirun + summary, Optuna, W&B sweep files, SLURM config, kill -9 and resume,
mixed precision and gradient clipping."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..helpers import ROOT, TINY, run_entry

ENV = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def _multirun(sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python train.py -m ...`` (in this interpreter: :func:`tests.helpers.run_entry`)."""
    return run_entry("train.py", "-m", f"hydra.sweep.dir={sweep_dir}", *TINY, *overrides)


def test_multirun_writes_one_dir_per_job_and_summary_tabulates(tmp_path):
    out = _multirun(tmp_path, "trainer.max_epochs=1", "loss.margin=0.1,0.3,0.5")
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(jobs) == 3
    for j in jobs:
        assert (j / "metrics.json").is_file() and (j / ".hydra" / "config.yaml").is_file()
    from facenet_pl.run.summary import summarize

    table = summarize(tmp_path, csv_path=tmp_path / "s.csv")
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(rows) == 3 and {r["loss.margin"] for r in rows} == {"0.1", "0.3", "0.5"}
    accs = [float(r["best/val/acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True)  # ranked by validation, the test accuracy shown beside it
    assert "test/acc" in rows[0] and "test/on" not in rows[0]
    assert not [c for c in rows[0] if c.startswith("_")]  # bookkeeping of collect() is not a column
    assert "| job |" in table


def test_optuna_sweep_returns_the_metric(tmp_path):
    out = _multirun(
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
        "trainer.max_epochs=1",
        "data.p=choice(2,4)",
        "data.k=choice(2,3)",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    trials = [json.loads(p.read_text()) for p in tmp_path.glob("*/metrics.json")]
    assert len(trials) == 2 and "loss.margin" in res["best_params"]
    # the sweeper optimised what the trials measured: the best trial's best val/acc
    assert float(res["best_value"]) == pytest.approx(max(t["best/val/acc"] for t in trials))


def _agent_commands(sweep_file: Path, n: int) -> list[list[str]]:
    """The commands a `wandb agent` would run for the first n parameter sets of a sweep file."""
    import itertools
    import random

    spec = yaml.safe_load(sweep_file.read_text())
    params = spec["parameters"]
    rng = random.Random(0)

    def sample(p):
        if "values" in p:
            return rng.choice(p["values"])
        if p.get("distribution") == "log_uniform_values":
            return float(p["min"]) * (float(p["max"]) / float(p["min"])) ** rng.random()
        return rng.uniform(float(p["min"]), float(p["max"]))

    if spec["method"] == "grid":
        combos = list(itertools.product(*[p["values"] for p in params.values()]))[:n]
        sets = [dict(zip(params, c)) for c in combos]
    else:
        sets = [{k: sample(p) for k, p in params.items()} for _ in range(n)]
    cmds = []
    for s in sets:
        cmd = []
        for tok in spec["command"]:
            if tok == "${env}":
                continue
            if tok == "python":
                cmd.append(sys.executable)
            elif tok == "${program}":
                cmd.append(str(ROOT / spec["program"]))
            elif tok == "${args_no_hyphens}":
                cmd += [f"{k}={v}" for k, v in s.items()]
            else:
                cmd.append(tok)
        cmds.append(cmd)
    return cmds


SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("sweep", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_wandb_sweep_file_parses_and_its_command_runs_offline(sweep, tmp_path):
    spec = yaml.safe_load(sweep.read_text())
    assert spec["metric"] == {"name": "val/acc", "goal": "maximize"}
    if not sweep.stem.startswith("ablation_"):  # the hyperparameter sweeps; ablation_* sweep one setting
        assert {"loss.margin", "data.p", "data.k", "model.embedding_dim"} <= set(spec["parameters"])
    assert "${args_no_hyphens}" in spec["command"]
    cmd = _agent_commands(sweep, 1)[0]
    # Tiny data; the sweep's own P/K are kept but bounded by the tiny identity count.
    cmd += [
        f"hydra.run.dir={tmp_path}",
        "data.train_identities=64",
        "data.train_images_per_identity=8",
        "data.val_identities=20",
        "data.val_images_per_identity=3",
        "data.val_pairs_per_fold=4",
        "data.test_identities=20",
        "data.test_images_per_identity=3",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "callbacks.progress_bar.refresh_rate=0",
    ]
    if sweep == SWEEPS[0]:  # the agent's command as it runs it, in a new interpreter, with W&B and no key
        env = {k: v for k, v in ENV.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
        env["HOME"] = str(tmp_path)
        out = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
        )
        assert out.returncode == 0, out.stderr[-3000:]
        # train.py went offline by itself (no key), never prompted
        assert list((tmp_path / "wandb").glob("offline-run-*")), "no offline W&B run was written"
        # (the one test that starts train.py in a new interpreter, as a user or an agent does)
        metrics = json.loads((tmp_path / "metrics.json").read_text())
        assert metrics["global_step"] == 2 and 0 <= metrics["test/acc"] <= 1
        assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / ".hydra" / "config.yaml").is_file()
        return
    # The other sweep files: the same arguments through train.py's main in this interpreter, logging to CSV (W&B
    # keeps per-process state and costs ~2.5 s a run; W&B offline is covered above and by the eval.py test).
    assert cmd[:2] == [sys.executable, str(ROOT / "train.py")], cmd
    assert "logger=wandb" in cmd
    out = run_entry("train.py", *["logger=csv" if a == "logger=wandb" else a for a in cmd[2:]])
    assert out.returncode == 0, out.stderr[-3000:]
    rows = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "val/acc" in rows.splitlines()[0]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and 0 <= metrics["best/val/acc"] <= 1


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer=ddp"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.tasks_per_node == 4 and launcher.max_num_timeout == 3


# Kill -9 / Ctrl-C and resume: tests/training/test_training_integrity.py compares every trained batch with an
# uninterrupted run.


@pytest.mark.parametrize(
    "extra",
    [
        ["trainer.precision=bf16-mixed"],
        ["trainer.gradient_clip_val=0.5"],
        ["model.channels_last=false"],
        ["scheduler=step"],
        ["optimizer=sgd"],
    ],
)
def test_training_options(tmp_path, extra):
    """In-process (train.py's own path is covered by tests/run/test_train_e2e.py)."""
    from ..helpers import read_batches, train_in_process

    rec = tmp_path / "batches.jsonl"
    train_in_process(
        tmp_path,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        *extra,
        "+callbacks.record._target_=tests.helpers.RecordBatches",
        f"+callbacks.record.path={rec}",
    )
    rows = read_batches(rec)
    assert [r["step"] for r in rows] == [1, 2, 3] and all(0 <= r["loss"] < 10 for r in rows)
    import torch

    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    group = ckpt["optimizer_states"][0]["param_groups"][0]
    if extra == ["optimizer=sgd"]:
        assert "momentum" in group and "betas" not in group
    else:
        assert "betas" in group
    sched = ckpt["lr_schedulers"][0]
    if extra == ["scheduler=step"]:
        assert "step_size" in sched
    else:
        assert "step_size" not in sched
