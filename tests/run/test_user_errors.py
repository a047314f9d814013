"""Mistakes a new user makes get one line naming the key or file and the fix: printed once, no traceback,
non-zero exit. train.py and eval.py run in this process through their Hydra entry points (``runpy``)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ..helpers import ROOT, TINY, run_entry

CASES = {
    "folder data without data.root": ("train.py", ["data=folder"], "data.root has no value"),
    "eval.py without ckpt_path": ("eval.py", [], "ckpt_path has no value"),
    "a corrupt checkpoint to resume": ("train.py", [*TINY, "ckpt_path={bad}"], "is not a readable checkpoint"),
    "a corrupt checkpoint to evaluate": ("eval.py", ["ckpt_path={bad}"], "is not a readable checkpoint"),
    "pretrained weights without network": (
        "train.py",
        [*TINY, "backbone=resnet18", "backbone.pretrained=true"],
        "could not load pretrained weights",
    ),
    "too few identities for the folds": ("train.py", [*TINY, "data.val_identities=3"], "4 identities are the minimum"),
    "the small backbone's kwargs on another timm model": (
        "train.py",
        [*TINY, "backbone.name=resnet18"],
        "do not fit 'resnet18'",
    ),
    "a word where a number goes": ("train.py", [*TINY, "data.p=eight"], "data.p must be an integer, got 'eight'"),
    "a margin no triplet can meet": ("train.py", [*TINY, "loss.margin=4"], "loss.margin=4 can never be met"),
    "a misspelt augmentation argument": (
        "train.py",
        [*TINY, "augment=standard", "+augment.ops.affine.degreez=5"],
        "augment.ops.affine (kornia.augmentation.RandomAffine)",
    ),
    # issue 41: each reached a traceback (or came after the 116-line config tree)
    "a seed left without a value": ("train.py", [*TINY, "seed=???"], "seed has no value"),
    "fine-tuning with no model to start from (it once trained from scratch)": (
        "train.py",
        ["experiment=finetune", "data.root=faces"],
        "model.init_from has no value",
    ),
    "a word for the epochs": ("train.py", [*TINY, "trainer.max_epochs=abc"], "trainer.max_epochs must be an integer"),
    "a negative learning rate": (
        "train.py",
        [*TINY, "optimizer.lr=-1"],
        "optimizer.lr must be >= 0 (0 keeps the weights as they are), got -1.0",
    ),
    "more identities per batch than the built-in data has": (
        "train.py",
        ["data.p=10000"],
        "data.p=10000 identities per batch, but the built-in data has data.train_identities=1200",
    ),
    "a fraction of the validation batches": (
        "train.py",
        [*TINY, "data.val_batch_size=8", "trainer.limit_val_batches=1"],
        "trainer.limit_val_batches=1 embeds 1 of the",
    ),
    "an experiment for the built-in data on LFW": (
        "train.py",
        ["experiment=losses", "data=lfw", "data.root={lfw}"],
        "data.train_identities is not a setting of LFWDataModule (data=lfw): experiment=losses sets it",
    ),
}
for _what in ("image", "empty", "text"):  # ckpt_path= the wrong kind of file: one line, train.py and eval.py
    CASES[f"ckpt_path of an {_what} file to resume"] = (
        "train.py",
        [*TINY, f"ckpt_path={{{_what}}}"],
        "not a readable checkpoint",
    )
    CASES[f"ckpt_path of an {_what} file to evaluate"] = (
        "eval.py",
        [f"ckpt_path={{{_what}}}"],
        "not a readable checkpoint",
    )


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_are_one_line_printed_once(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here, as on CI
    script, argv, message = CASES[case]
    from PIL import Image

    files = {
        "bad": tmp_path / "bad.ckpt",
        "image": tmp_path / "face.png",
        "empty": tmp_path / "empty.ckpt",
        "text": tmp_path / "notes.txt",
    }
    files["bad"].write_bytes(b"not a checkpoint")
    Image.new("RGB", (8, 8)).save(files["image"])
    files["empty"].write_bytes(b"")
    files["text"].write_text("epoch 3: val/acc 0.91\n")
    files["lfw"] = tmp_path / "lfw"  # never read: the error comes first
    for name, f in files.items():
        argv = [a.replace(f"{{{name}}}", str(f)) for a in argv]
    argv = [*argv, f"hydra.run.dir={tmp_path / 'run'}"]
    r = run_entry(script, *argv)
    code, out, err = r.returncode, r.stdout, r.stderr
    assert code == 1, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in out + err
    assert (out + err).count(message) == 1, "printed more than once"
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_config_typo_is_reported_before_torch_loads():
    """Hydra reports an unknown option before train.py imports torch, Lightning or timm."""
    code = (
        "import runpy, sys, atexit\n"
        "atexit.register(lambda: print('HEAVY', sorted(m for m in ('torch', 'pytorch_lightning', 'timm') "
        "if m in sys.modules)))\n"
        f"sys.argv = [{str(ROOT / 'train.py')!r}, 'miner=semi_hard']\n"
        f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')\n"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    assert out.returncode != 0 and "semi_hard" in out.stderr and "semihard" in out.stderr  # Hydra lists options
    assert "HEAVY []" in out.stdout, out.stdout
    print(f"config typo reported in {elapsed:.1f} s")


@pytest.mark.parametrize(
    "mistake",
    ["seed=???", "trainer.max_epochs=abc", "optimizer.lr=-1", "data.p=10000", "data=folder", "experiment=finetune"],
)
def test_config_mistakes_are_one_line_before_torch_loads(mistake, tmp_path):
    """The config mistakes a typo makes are caught by the checks that need no torch (torch alone takes 2-3 s to
    import on 2 cores, facenet_pl.run.fit ~9 s): the line arrives in about a second
    (benchmarks/bench_error_latency.py measures it); the check can fail: a check made after the imports lists them."""
    code = (
        "import runpy, sys, atexit\n"
        "atexit.register(lambda: print('HEAVY', sorted(m for m in ('torch', 'pytorch_lightning', 'timm') "
        "if m in sys.modules)))\n"
        f"sys.argv = [{str(ROOT / 'train.py')!r}, {mistake!r}, {f'hydra.run.dir={tmp_path}'!r}]\n"
        f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    named = {"data=folder": "data.root", "experiment=finetune": "data.root, model.init_from have no value"}
    key = named.get(mistake, mistake.split("=")[0])
    assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {key}"), out.stderr
    assert "HEAVY []" in out.stdout, out.stdout


def test_a_missing_value_is_reported_alone_without_the_config_tree(tmp_path):
    """data=folder without data.root: the one line comes first and alone, not after a 140-line config tree."""
    r = run_entry("train.py", "data=folder", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 1 and "data.root has no value" in r.stderr
    assert "CONFIG" not in r.stdout and not (tmp_path / "run" / "config_tree.txt").exists()


def test_a_margin_few_triplets_can_meet_is_warned_and_a_usual_one_is_not(tmp_path, caplog):
    import logging

    from ..helpers import train_in_process

    with caplog.at_level(logging.WARNING, logger="facenet_pl"):
        train_in_process(tmp_path / "a", "loss.margin=3.99", "trainer.max_steps=1", "test=false")
    assert "loss.margin=3.99 is above 2" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="facenet_pl"):
        train_in_process(tmp_path / "b", "loss.margin=0.2", "trainer.max_steps=1", "test=false")
    assert "loss.margin" not in caplog.text
