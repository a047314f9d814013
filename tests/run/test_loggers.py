"""Every logger works with train.py and eval.py; W&B goes offline only when no key is configured."""

from __future__ import annotations

import os

import pytest

from facenet_pl.run.wandb_setup import wandb_key_configured

from ..helpers import eval_in_process, run_entry_in_fork, train_in_process

KEY = "a" * 40


def test_wandb_key_detection_follows_netrc_and_base_url(tmp_path, monkeypatch):
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not wandb_key_configured()
    rc = tmp_path / "elsewhere" / "netrc"
    rc.parent.mkdir()
    rc.write_text(f"machine wandb.example.com\n  login user\n  password {KEY}\n")
    rc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(rc))
    assert not wandb_key_configured()  # a key for another server than api.wandb.ai
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")
    assert wandb_key_configured()  # a self-hosted server the user logged in to: not forced offline
    monkeypatch.delenv("NETRC")
    monkeypatch.delenv("WANDB_BASE_URL")
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    assert wandb_key_configured()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train_in_process(run, "trainer.max_epochs=1", "logger=none")  # logger=none with the default callbacks
    return run / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("logger", ["csv", "tensorboard", "none"])
def test_eval_logs_with_each_logger(model, tmp_path, logger):
    res = eval_in_process(model, tmp_path, f"logger={logger}")
    assert 0 <= res["accuracy"] <= 1
    if logger == "csv":
        text = (tmp_path / "csv" / "metrics.csv").read_text()
        assert "eval/accuracy" in text and "eval/accuracy_ci95_low" in text
    if logger == "tensorboard":
        assert list(tmp_path.rglob("events.out.tfevents.*"))


def test_eval_py_with_wandb_and_no_key_runs_offline(model, tmp_path):
    # a new process (forked: W&B state is per process) with no W&B variable and a HOME without a key
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("WANDB_", "NETRC"))}
    env.update(WANDB_MODE=None, WANDB_API_KEY=None, HOME=str(tmp_path))  # run_entry would set WANDB_MODE
    out = run_entry_in_fork(
        "eval.py", f"ckpt_path={model}", "logger=wandb", f"hydra.run.dir={tmp_path / 'eval'}", env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "no W&B API key found: logging offline" in out.stdout + out.stderr
    assert list((tmp_path / "eval" / "wandb").glob("offline-run-*")), "no offline W&B run was written"


def test_train_logs_with_tensorboard(tmp_path):
    """(csv: tests/run/test_train_e2e.py; wandb offline: the sweep test in tests/run/test_experiments.py; none:
    above.)"""
    metrics = train_in_process(tmp_path, "trainer.max_epochs=1", "logger=tensorboard", logger=True)
    assert "test/acc" in metrics
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_a_failed_csv_header_rewrite_keeps_the_runs_history(tmp_path, monkeypatch):
    """The test phase logs new names (test/*), so the CSV logger rewrites metrics.csv with a wider header; a write
    that fails part-way (here: a full disk after the header) leaves the file as it was, every row of the run's
    history in it (Lightning's own writer truncates the file first)."""
    import csv
    import errno

    from facenet_pl.run.loggers import AppendingExperimentWriter

    writer = AppendingExperimentWriter(str(tmp_path))
    writer.log_metrics({"train/loss": 0.5}, step=0)
    writer.log_metrics({"train/loss": 0.4}, step=1)
    writer.save()
    before = (tmp_path / "metrics.csv").read_bytes()
    assert before.count(b"\n") == 3
    writer.log_metrics({"test/acc": 0.9}, step=2)

    def full(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", full)
    try:
        writer.save()
    except OSError:
        pass
    assert (tmp_path / "metrics.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]  # no temp file left either
