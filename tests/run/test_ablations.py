"""The paper's ablations: experiment configs, test-time degradation, FLOP counts and `facenet-pl report`."""

from __future__ import annotations

import csv
import io
import itertools
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from facenet_pl.evaluation.degrade import Degradation
from facenet_pl.models.complexity import model_complexity
from facenet_pl.run.report import make_report
from facenet_pl.utils.errors import ConfigError

from ..helpers import ROOT, TINY, compose_in_process, run_cli, run_entry, train_error_in_process


def _ablations(task: str) -> list[str]:
    """Experiments with a sweep (``hydra.sweeper.params``) for train.py or eval.py (``experiment_for: eval``)."""
    found = []
    for f in sorted((ROOT / "conf" / "experiment").glob("*.yaml")):
        text = f.read_text()
        if "sweeper:" in text and ("experiment_for: eval" in text) == (task == "eval"):
            found.append(f.stem)
    return found


TRAIN_ABLATIONS = _ablations("train")
EVAL_ABLATIONS = _ablations("eval")


def test_every_ablation_of_the_paper_has_an_experiment():
    assert {"architectures", "embedding_dim", "train_size", "margin", "batch_size", "miners"} <= set(TRAIN_ABLATIONS)
    assert "losses" in TRAIN_ABLATIONS  # beyond the paper: margin-softmax losses and the hybrids
    assert {"image_quality", "image_size"} <= set(EVAL_ABLATIONS)


def sweep_jobs() -> list[list[str]]:
    """The override list of every job the last composed config's ``hydra.sweeper.params`` grid expands to."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    params = HydraConfig.get().sweeper.params
    axes = []
    for key, value in params.items():
        (ov,) = parser.parse_overrides([f"{key}={value}"])
        axes.append([f"{key}={v}" for v in ov.sweep_string_iterator()])
    return [list(job) for job in itertools.product(*axes)]


# --- test-time degradation --------------------------------------------------------------------------------


def test_jpeg_degradation_matches_a_pil_round_trip_and_grows_with_lower_quality():
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (3, 8, 8)), np.ones((1, 8, 8))).astype(np.uint8)  # 64 x 64 blocks
    noisy = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
    images = torch.from_numpy(np.stack([smooth, noisy]))
    errors = {}
    for q in (10, 50, 95):
        got = Degradation(jpeg_quality=q)(images)
        assert got.shape == images.shape and got.dtype == torch.uint8
        buf = io.BytesIO()  # independent reference: PIL's encoder at the same quality
        Image.fromarray(noisy.transpose(1, 2, 0)).save(buf, format="JPEG", quality=q)
        ref = np.asarray(Image.open(buf)).transpose(2, 0, 1).astype(float)
        assert np.abs(got[1].numpy().astype(float) - ref).mean() < 3.0, q  # same codec family, small drift
        errors[q] = (got.float() - images.float()).abs().mean().item()
    assert errors[10] > errors[50] > errors[95] > 0
    gray = images[:, :1]
    assert Degradation(jpeg_quality=30)(gray).shape == gray.shape  # 1-channel sources stay 1-channel


def test_size_degradation_averages_detail_away_and_keeps_the_input_size():
    checker = ((np.indices((32, 32)).sum(0) % 2) * 255).astype(np.uint8)  # 1-px checkerboard
    images = torch.from_numpy(np.stack([checker] * 3))[None]
    out = Degradation(image_size=16)(images)
    assert out.shape == images.shape
    # every neighbourhood holds as many 0s as 255s: shrinking by 2 (antialiased) averages the pattern away,
    # its contrast falls from 255 to a few grey levels around mid-gray (the bilinear kernel is not a box)
    assert torch.all((out.float() - 127.5).abs() <= 3.0)
    assert (out.float() - 127.5).abs().mean() < 1.5
    flat = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)
    assert torch.equal(Degradation(image_size=5)(flat), flat)  # nothing to lose in a flat image
    assert (Degradation(image_size=5, jpeg_quality=60)(flat).int() - 77).abs().max() <= 1  # JPEG's colour rounding
    assert torch.equal(Degradation()(images), images)


@pytest.mark.parametrize(
    "setting", [{"jpeg_quality": 0}, {"jpeg_quality": 101}, {"jpeg_quality": 1.5}, {"image_size": 1}, {"size": 3}]
)
def test_bad_degradation_settings_are_config_errors(setting):
    with pytest.raises(ConfigError, match="degrade"):
        Degradation.from_config(setting)


# --- parameters and multiply-adds ---------------------------------------------------------------------------


def test_model_complexity_of_a_hand_counted_network():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    got = model_complexity(net, input_size=8)
    # conv: 8*8 outputs x 4 filters x (3*3*3) weights; linear: 4*2
    assert got["model/macs_per_image"] == 8 * 8 * 4 * 27 + 4 * 2
    assert got["model/params"] == 3 * 4 * 9 + 4 * 2 + 2
    net.train()
    model_complexity(net, 16)  # a size not counted yet: the network runs
    assert net.training  # the caller's network is untouched (a copy is measured)


def test_a_network_is_counted_once_per_input_size():
    """The model summary (fit start) and metrics.json (fit end) both ask: the second answer is the first count's,
    with no forward pass; another input size is counted anew."""
    forwards = []
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.register_forward_hook(lambda *_: forwards.append(1))  # deepcopy keeps the hook: the copy's forwards count
    first = model_complexity(net, 8)
    assert model_complexity(net, 8) == first and len(forwards) == 1
    assert model_complexity(net, 10)["model/macs_per_image"] == 8 * 8 * 4 * 27 and len(forwards) == 2


# --- experiment configs ----------------------------------------------------------------------------------------


def _jobs_to_build(jobs: list[list[str]], every: bool) -> list[list[str]]:
    """All jobs, or (CI) the first and the last of a numeric sweep and every job that picks a config group
    (``miner=...``, ``backbone=...``): composing a job costs 0.3 s."""
    if every or "." not in jobs[0][0].split("=", 1)[0]:
        return jobs
    return [jobs[0], jobs[-1]]


@pytest.mark.parametrize("every", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["ends", "every"])
def test_every_ablation_job_composes_passes_the_checks_and_builds(tmp_path, every):
    """Jobs of each train.py ablation grid: the config train.py would run, checked and instantiated."""
    from hydra.utils import instantiate

    from facenet_pl.run.config_checks import check_config
    from facenet_pl.run.fit import build_module

    seen = {}
    for name in TRAIN_ABLATIONS:
        compose_in_process("train", tmp_path, [f"experiment={name}"])
        jobs = sweep_jobs()
        assert len(jobs) >= 4, name
        seen[name] = jobs
        for job in _jobs_to_build(jobs, every):
            cfg = compose_in_process("train", tmp_path, [f"experiment={name}", *job])
            check_config(cfg)
            module = build_module(cfg)
            instantiate(cfg.data)
            # the swept value reached the object it is about
            key, value = job[0].split("=", 1)
            if key == "model.embedding_dim":
                assert module.net.embedding_dim == int(value)
            if key == "loss.margin":
                assert module.criterion.margin == pytest.approx(float(value))
            if key == "miner":
                assert type(module.miner).__name__ == str(cfg.miner._target_).rsplit(".", 1)[1]
            if key == "loss":  # a classification loss has its class weights and no miner; the others mine
                assert (module.classifier is not None) == ("arcface" in value or "face" in value or "softmax" in value)
                assert (module.miner is None) == (module.triplet_loss is None)
    miners = ("semihard", "hardest", "random", "batch_hard", "batch_all")
    assert [j[0] for j in seen["miners"]] == [f"miner={m}" for m in miners]
    for name in EVAL_ABLATIONS:
        compose_in_process("eval", tmp_path, [f"experiment={name}", "ckpt_path=x.ckpt"])
        jobs = sweep_jobs()
        assert len(jobs) >= 6 and any(j[0].endswith("=null") for j in jobs), name
        for job in _jobs_to_build(jobs, every):
            c = compose_in_process("eval", tmp_path, [f"experiment={name}", "ckpt_path=x.ckpt", *job])
            Degradation.from_config(c.degrade)


def test_an_eval_experiment_given_to_train_py_says_where_it_belongs(tmp_path):
    msg = train_error_in_process(tmp_path, "experiment=image_quality")
    assert "eval.py -m experiment=image_quality" in msg


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python <script> <args>`` through the script's own main (in this interpreter: tests.helpers.run_entry)."""
    out = run_entry(script, *args, cwd=cwd, env={"WANDB_MODE": "disabled"})
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_tiny_miners_multirun_then_image_quality_eval_multirun_and_reports(tmp_path):
    """train.py -m experiment=miners (1 step per job), eval.py -m experiment=image_quality on one of its
    checkpoints, and `facenet-pl report` on both: what a user runs, end to end."""
    sweep = tmp_path / "miners"
    run(
        "train.py", "-m", "experiment=miners", f"hydra.sweep.dir={sweep}", *TINY,
        "trainer.max_epochs=1", "data.batches_per_epoch=1", cwd=tmp_path,
    )  # fmt: skip
    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert len(jobs) == 5
    metrics = {
        yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text())[0]: json.loads((j / "metrics.json").read_text())
        for j in jobs
    }
    assert all(m["global_step"] == 1 and m["model/macs_per_image"] > 0 for m in metrics.values())
    # P=4 x K=3: 4 * 3 * 2 = 24 anchor-positive pairs, one negative each (semihard where one exists), batch-hard
    # one triplet per anchor (12), batch-all the violating ones among the 24 x 9 = 216 valid triplets
    triplets = {k.split("=")[1]: m["train/num_triplets"] for k, m in metrics.items()}
    assert triplets["hardest"] == triplets["random"] == 24 and triplets["batch_hard"] == 12
    assert 0 < triplets["semihard"] <= 24 and 0 < triplets["batch_all"] <= 216
    rep = make_report(sweep)
    assert rep.swept == ["miner"] and rep.metric == "test/acc"
    with open(rep.files["csv"]) as f:
        table = list(csv.DictReader(f))
    assert sorted(r["miner"] for r in table) == sorted(["semihard", "hardest", "random", "batch_hard", "batch_all"])
    for r in table:  # the table holds each job's own test accuracy
        assert float(r["test/acc"]) == pytest.approx(metrics[f"miner={r['miner']}"]["test/acc"])
    assert Image.open(rep.files["plot"]).size[0] > 100

    ckpt = jobs[0] / "checkpoints" / "last.ckpt"
    ev = tmp_path / "quality"
    run("eval.py", "-m", "experiment=image_quality", f"ckpt_path={ckpt}", f"hydra.sweep.dir={ev}",
        "degrade.jpeg_quality=null,5", "knn=false", "clustering=false", cwd=tmp_path)  # fmt: skip
    res = {
        str(json.loads((j / "eval_metrics.json").read_text())["degrade/jpeg_quality"]): json.loads(
            (j / "eval_metrics.json").read_text()
        )
        for j in ev.iterdir()
        if j.name.isdigit()
    }
    assert set(res) == {"None", "5"}
    assert res["None"]["pairs"] == res["5"]["pairs"]
    assert res["None"]["auc"] != res["5"]["auc"]  # the degraded images changed the distances
    cli = run_cli("report", ev)
    assert cli.returncode == 0, cli.stderr
    assert "| none |" in cli.stdout and "| 5 |" in cli.stdout and "degrade.jpeg_quality" in cli.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAIN_ABLATIONS)
def test_each_ablation_multirun_runs_one_step_per_job(tmp_path, name):
    sweep = tmp_path / name
    run("train.py", "-m", f"experiment={name}", f"hydra.sweep.dir={sweep}", *TINY,
        "trainer.max_epochs=1", "data.batches_per_epoch=1", "test=false", cwd=tmp_path)  # fmt: skip
    jobs = [p for p in sweep.iterdir() if p.name.isdigit()]
    assert all(json.loads((j / "metrics.json").read_text())["global_step"] == 1 for j in jobs)
    assert make_report(sweep, metric="best/val/acc").files["plot"].is_file()


# --- report from a fixture multirun directory ---------------------------------------------------------------


def fake_multirun(root: Path, key: str, values: list, metrics: list[dict]) -> Path:
    for i, (v, m) in enumerate(zip(values, metrics, strict=True)):
        job = root / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{key}={v}", "trainer.max_epochs=5"]))
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"logger": {"csv": {}}}))
        if m is not None:
            (job / "metrics.json").write_text(json.dumps(m))
    return root


def test_report_tables_and_plots_a_numeric_sweep_in_value_order(tmp_path):
    dims = [512, 64, 256, 128]
    accs = [0.91, 0.88, 0.93, 0.95]
    mr = fake_multirun(
        tmp_path / "mr", "model.embedding_dim", dims,
        [{"test/acc": a, "test/acc_std": 0.01, "test/val_at_far": a - 0.2, "model/params": 1e6 * d,
          "model/macs_per_image": 2e6 * d} for a, d in zip(accs, dims, strict=True)],
    )  # fmt: skip
    rep = make_report(mr)
    assert rep.swept == ["model.embedding_dim"]  # trainer.max_epochs is the same in every job: not swept
    rows = [line for line in rep.markdown.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [int(r.split("|")[1]) for r in rows] == [64, 128, 256, 512]
    assert [float(r.split("|")[2]) for r in rows] == [0.88, 0.95, 0.93, 0.91]
    with open(rep.files["csv"]) as f:
        got = {int(r["model.embedding_dim"]): float(r["test/acc"]) for r in csv.DictReader(f)}
    assert got == dict(zip(dims, accs, strict=True))
    assert Image.open(rep.files["plot"]).size[0] > 100
    with pytest.raises(FileExistsError, match="--force"):
        make_report(mr)
    rep.files["plot"].write_bytes(b"")  # --force replaces the report (a fresh PNG, not the stale file)
    rep2 = make_report(mr, x="model/macs_per_image", force=True)
    assert Image.open(rep2.files["plot"]).size[0] > 100
    assert rep2.markdown.splitlines()[2].split("|")[2].strip() == "model/macs_per_image"
    with pytest.raises(ValueError, match="no job .* reported 'test/nope'"):
        make_report(mr, metric="test/nope", force=True)


def test_report_handles_categories_failed_jobs_and_logs_to_wandb_offline(tmp_path, monkeypatch):
    mr = fake_multirun(
        tmp_path / "mr", "miner", ["semihard", "hardest", "random"], [{"test/acc": 0.9}, {"test/acc": 0.5}, None]
    )
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    rep = make_report(mr, out_dir=tmp_path / "out", use_wandb=True)
    assert "| random |  |" in rep.markdown and "no metrics" in rep.markdown  # the failed job is shown, not hidden
    assert rep.files["plot"].parent == tmp_path / "out" and rep.files["plot"].is_file()
    assert list((tmp_path / "out" / "wandb").glob("offline-run-*")), "no offline W&B run with the report"


def test_report_plot_marks_chance_and_keeps_it_in_view(tmp_path, monkeypatch):
    """A near-chance sweep (0.53-0.57) must not autoscale into a plot where 50% is off the axis."""
    import matplotlib.figure

    saved = []
    real_savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), real_savefig(fig, *a, **k))[1]
    )
    mr = fake_multirun(tmp_path / "mr", "loss.margin", [0.1, 0.2, 0.4], [{"test/acc": a} for a in (0.53, 0.57, 0.55)])
    make_report(mr)  # a line plot
    bars = fake_multirun(tmp_path / "bars", "miner", ["x", "y"], [{"test/acc": 0.54}, {"test/acc": 0.56}])
    make_report(bars)  # one bar per job
    assert len(saved) == 2
    for fig in saved:
        ax = fig.axes[0]
        low, high = ax.get_ylim()
        assert low < 0.5 < high
        flat = [ln for ln in ax.get_lines() if list(ln.get_ydata()) == [0.5, 0.5]]
        assert len(flat) == 1 and "chance" in flat[0].get_label()
    cats = fake_multirun(tmp_path / "cats", "miner", ["a", "b"], [{"model/params": 1.0}, {"model/params": 2.0}])
    saved.clear()
    make_report(cats, metric="model/params")  # no chance level: no line
    assert not [ln for ln in saved[0].axes[0].get_lines() if list(ln.get_ydata()) == [0.5, 0.5]]
