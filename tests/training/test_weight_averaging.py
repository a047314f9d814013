"""``callbacks=ema``: the averaged weights are the exponential average of the weights trained (recomputed here from
every step's raw weights), they are what the checkpoints hold and what the test scores; resume keeps both."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import run_train, train_error_in_process

PROBE = "+callbacks.probe._target_=tests.helpers.RecordWeights"


def _ema_by_hand(steps: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    avg = {k: v.double() if v.is_floating_point() else v.clone() for k, v in steps[0].items()}
    for w in steps[1:]:
        for k, v in w.items():
            avg[k] = decay * avg[k] + (1 - decay) * v.double() if v.is_floating_point() else v.clone()
    return avg


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a.double(), b, atol=1e-6) if a.is_floating_point() else torch.equal(a, b)


def _weights(state: dict) -> dict:
    """Everything but the validation threshold, which is set by validation, not trained."""
    return {k: v for k, v in state.items() if k != "threshold"}


def _load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("loss", ["triplet", "triplet_arcface"])  # ArcFace's class weights are made in setup
def test_checkpoint_and_test_hold_the_average_of_the_trained_weights(tmp_path, loss):
    probe = tmp_path / "weights"
    probe.mkdir()
    run = tmp_path / "run"
    r = run_train(
        run,
        f"loss={loss}",
        "callbacks=ema",
        "callbacks.ema.decay=0.6",
        PROBE,
        f"+callbacks.probe.dir={probe}",
        "trainer.max_epochs=2",
        "data.batches_per_epoch=3",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    steps = [_load(probe / f"step{i}.pt") for i in range(1, 7)]
    last = _load(run / "checkpoints" / "last.ckpt")
    expected = _ema_by_hand(steps, 0.6)
    for k, v in _weights(last["state_dict"]).items():
        assert _close(v, expected[k]), k  # the average, not the raw weights
    for k, v in _weights(last["current_model_state"]).items():
        assert torch.equal(v, steps[-1][k]), k  # the raw weights beside it, to resume with
    # the threshold is not averaged: it is the one the last validation (of the average) chose
    metrics = json.loads((run / "metrics.json").read_text())
    assert float(last["state_dict"]["threshold"]) == pytest.approx(metrics["val/threshold"], rel=1e-6)
    floats = [k for k in _weights(expected) if expected[k].is_floating_point()]
    moved = max((steps[-1][k] - expected[k]).abs().max().item() for k in floats)
    assert moved > 1e-4  # the average is not the last weights: the checks above tell them apart
    # the test scores the checkpoint it names (the averaged weights that validation picked), not the raw ones
    best = next((run / "checkpoints").glob("epoch*.ckpt"))
    tested, chosen = _load(probe / "test.pt"), _load(best)["state_dict"]
    for k, v in chosen.items():
        assert torch.equal(tested[k], v), k
    # and what embed/verify/export load from it (the averaged copy's extra keys are plain tensors)
    from facenet_pl.inference.model_files import load_model_file

    loaded = load_model_file(best).state_dict()  # the embedding network (training-only class weights left out)
    assert any(k.startswith("net.") for k in loaded)
    for k, v in loaded.items():
        assert torch.equal(v, chosen[k]), k


def test_resume_continues_the_average(tmp_path):
    """Two epochs, stopped after the first and resumed, average to what two epochs in one go average to."""
    probe = tmp_path / "weights"
    probe.mkdir()
    run = tmp_path / "run"
    args = ("callbacks=ema", "callbacks.ema.decay=0.6", PROBE, f"+callbacks.probe.dir={probe}")
    args += ("data.batches_per_epoch=3",)
    assert run_train(run, *args, "trainer.max_epochs=1").returncode == 0
    r = run_train(run, *args, "trainer.max_epochs=2", "ckpt_path=last")
    assert r.returncode == 0, r.stderr[-3000:]
    steps = [_load(probe / f"step{i}.pt") for i in range(1, 7)]
    expected = _ema_by_hand(steps, 0.6)
    last = _load(run / "checkpoints" / "last.ckpt")
    for k, v in _weights(last["state_dict"]).items():
        assert _close(v, expected[k]), k


def test_decay_out_of_range_is_one_line(tmp_path):
    err = train_error_in_process(tmp_path, "callbacks=ema", "callbacks.ema.decay=1.5")
    assert "callbacks.ema.decay=1.5" in err and "[0, 1)" in err
