"""The training guards (facenet_pl/training/guards.py), each fault injected through the real Trainer where Lightning's
calls matter: a non-finite loss, diverging weights (a huge learning rate, weights scaled after a good epoch, NaN in
validation), the checkpoint writer's own check, reading the guards every N steps, and embedding collapse."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from facenet_pl.training.guards import NonFiniteLossError

from ..helpers import tiny_module, train_error_in_process


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    msg = train_error_in_process(
        tmp_path,
        "trainer.max_epochs=3",
        "+callbacks.nan._target_=tests.helpers.InjectNaNWeights",
        "+callbacks.nan.step=8",
    )  # 6 steps per epoch: epoch 1 ends well, step 8 fails
    assert "non-finite loss" in msg and "last good checkpoint" in msg
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 6
    assert all(
        torch.isfinite(v).all()
        for v in ckpt["state_dict"].values()
        if v.is_floating_point() and v.numel() and "threshold" not in str(v)
    )


@pytest.mark.parametrize("every_n_ckpt,stops_at", [(None, 12), (1, 10)])
def test_guards_read_every_n_steps_stop_within_n_and_never_checkpoint_a_bad_step(tmp_path, every_n_ckpt, stops_at):
    """model.guard_every_n_steps=4 (the guards are read at steps 8, 12, ...): NaN weights at step 9 stop training at
    the next read (step 12), or at the next checkpoint write when one comes first (every step: step 10, whose
    checkpoint is not written); the message names step 9, and last.ckpt holds finite weights from before it."""
    extra = [f"callbacks.last_checkpoint.every_n_train_steps={every_n_ckpt}"] if every_n_ckpt else []
    msg = train_error_in_process(
        tmp_path,
        "trainer.max_epochs=3",
        "model.guard_every_n_steps=4",
        "+callbacks.nan._target_=tests.helpers.InjectNaNWeights",
        "+callbacks.nan.step=9",
        *extra,
    )
    assert "non-finite loss (nan) at step 9" in msg and f"training stopped at step {stops_at}" in msg, msg
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == (9 if every_n_ckpt else 6)  # the newest checkpoint from before step 9
    assert all(
        torch.isfinite(v).all() for k, v in ckpt["state_dict"].items() if v.is_floating_point() and "threshold" not in k
    )


def test_collapse_is_detected_and_warned(caplog):
    """The rule, on the values a guard read hands it: a spread of 0 (every embedding one point) warns; a healthy
    batch (spread 1.9, d(a,n) > d(a,p)) does not."""
    m = tiny_module()
    with caplog.at_level(logging.WARNING):
        m._check_collapse(0.0, 1e-7, 1e-7)
    assert m.collapse.warnings == 1 and "embedding collapse" in caplog.text
    m2 = tiny_module()
    m2._check_collapse(1.9, 0.9, 0.3)
    assert m2.collapse.warnings == 0


@pytest.mark.parametrize(
    "loss,miner,says,never",
    [
        ({"_target_": "facenet_pl.losses.TripletLoss"}, "semihard", "miner=semihard", "loss=triplet_arcface"),
        (
            {"_target_": "facenet_pl.losses.ClassificationLoss", "name": "arcface"},
            None,
            "loss=triplet_arcface",
            "miner=",
        ),
        (
            {
                "_target_": "facenet_pl.losses.CombinedLoss",
                "triplet": {"_target_": "facenet_pl.losses.TripletLoss"},
                "classification": {"_target_": "facenet_pl.losses.ClassificationLoss", "name": "arcface"},
            },
            "semihard",
            "loss.classification_weight",
            "loss=triplet_arcface",
        ),
    ],
    ids=["triplet", "arcface", "triplet_arcface"],
)
def test_collapse_advice_is_one_the_runs_loss_accepts(caplog, loss, miner, says, never):
    """A classification loss refuses miner=..., so its collapse warning must not suggest one; a hybrid's names its
    classification weight."""
    target = {"_target_": "facenet_pl.mining.SemiHardMiner"} if miner else {"_target_": None}
    m = tiny_module(loss=loss, miner=target)
    with caplog.at_level(logging.WARNING):
        m._check_collapse(0.0, float("nan"), float("nan"))
    assert m.collapse.warnings == 1 and says in caplog.text and never not in caplog.text, caplog.text


def test_non_finite_loss_raises_in_training_step(monkeypatch):
    m = tiny_module()
    monkeypatch.setattr(m, "log", lambda *a, **k: None)
    images = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    with torch.no_grad():
        m.net.head.bias.fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        m.training_step((images, labels, torch.arange(8)), 0)


# -- diverging training ----------------------------------------------------------------------------------------


def _assert_every_checkpoint_is_sane(folder: Path) -> list[int]:
    steps = []
    for f in sorted(folder.glob("*.ckpt")):
        ckpt = torch.load(f, map_location="cpu", weights_only=True)
        for name, v in ckpt["state_dict"].items():
            if v.is_floating_point() and v.numel() and not name.endswith("threshold"):
                assert torch.isfinite(v).all() and v.abs().max() <= 1e6, f"{f.name}: {name} diverged"
        steps.append(int(ckpt["global_step"]))
    return steps


@pytest.mark.parametrize("extra", [[], ["scheduler=none"]], ids=["cosine", "no-scheduler"])
def test_a_huge_learning_rate_stops_with_one_line_and_leaves_only_sane_checkpoints(tmp_path, extra):
    """(In-process: train.py's one-line printing of such errors is tested in tests/run/test_user_errors.py.)"""
    err = train_error_in_process(tmp_path, "trainer.max_epochs=3", "optimizer.lr=1e6", *extra)
    assert "training diverged" in err or "non-finite loss" in err, err
    steps = _assert_every_checkpoint_is_sane(tmp_path / "checkpoints")
    if steps:
        assert f"(step {max(steps)})" in err
    else:
        assert "No checkpoint was written before it" in err


def test_weights_exploding_after_a_good_epoch_point_to_that_epochs_checkpoint(tmp_path):
    """Weights x 1e9 at step 8 (epoch 1 of 6 steps each): the loss can stay finite, the weights are not."""
    err = train_error_in_process(
        tmp_path,
        "trainer.max_epochs=3",
        "+callbacks.boom._target_=tests.helpers.ScaleWeights",
        "+callbacks.boom.step=8",
        "+callbacks.boom.factor=1e9",
    )
    assert "training diverged at step 8" in err or "non-finite loss" in err, err
    assert set(_assert_every_checkpoint_is_sane(tmp_path / "checkpoints")) == {6}  # best epoch + last.ckpt
    assert "last.ckpt (step 6)" in err


def test_nan_embeddings_in_validation_stop_with_one_line(tmp_path):
    err = train_error_in_process(
        tmp_path,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "+callbacks.nan._target_=tests.helpers.PoisonBeforeValidation",
    )
    assert "pair distances are NaN or inf" in err, err
    _assert_every_checkpoint_is_sane(tmp_path / "checkpoints")


def test_the_checkpoint_writer_refuses_diverged_weights(tmp_path):
    from facenet_pl.training.checkpoint_io import AtomicCheckpointIO
    from facenet_pl.training.guards import DivergedWeightsError

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 5}, path)
    for bad in (float("nan"), float("inf"), 1e20):
        with pytest.raises(DivergedWeightsError, match="not writing"):
            io.save_checkpoint({"state_dict": {"bn.running_var": torch.tensor([1.0, bad])}, "global_step": 8}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


# -- collapse --------------------------------------------------------------------------------------------------


def _judge(module, emb: torch.Tensor, stats) -> None:
    """What a guard read hands the collapse rule for a batch: its spread (mean pairwise squared distance of unit
    vectors, 2 (1 - |mean|^2)) and the mined distances."""
    spread = float(2 * (1 - emb.mean(0).pow(2).sum()))
    module._check_collapse(spread, float(stats.mean_d_an), float(stats.mean_d_ap))


def test_collapse_is_judged_against_the_runs_own_early_distances(caplog):
    """Distances shrinking ~1000x (the issue's hardest-from-step-0 run: 1.6 -> 2.4e-3) warn, though far above the
    old absolute 1e-4; a healthy run whose distances shrink 3x does not."""
    from ..helpers import tiny_module as _module

    stats = type("S", (), {"num_triplets": 10, "mean_d_an": torch.tensor(2e-3), "mean_d_ap": torch.tensor(1e-3)})
    g = torch.Generator().manual_seed(0)
    healthy = torch.nn.functional.normalize(torch.randn(64, 8, generator=g), dim=1)
    centre = torch.nn.functional.normalize(torch.ones(1, 8), dim=1)

    def shrunk(scale):  # points around one centre, mean pairwise squared distance ~ 2 * scale**2
        return torch.nn.functional.normalize(centre + scale * torch.randn(64, 8, generator=g), dim=1)

    m = _module()
    with caplog.at_level(logging.WARNING):
        _judge(m, healthy, stats)
        assert m.collapse.warnings == 0 and m.collapse.spread_max > 1.5
        _judge(m, shrunk(0.03), stats)  # spread ~2e-3: 0.1% of the run's
    assert m.collapse.warnings == 1 and "embedding collapse" in caplog.text
    m2 = _module()
    _judge(m2, healthy, stats)
    _judge(m2, shrunk(0.6), stats)  # spread ~0.5: a model that clusters, not a collapse
    assert m2.collapse.warnings == 0


def test_a_collapse_sitting_at_the_margin_is_warned_without_false_alarms(caplog):
    """The issue's hardest-negatives run at lr 0.05: spread at 2.5% of the run's largest (above the 2% trigger)
    while every mined distance is near zero, so the loss sits at the margin: warned. The same spread with mined
    distances of a model that separates people, or near-zero distances at 50% of the spread: not warned."""
    from ..helpers import tiny_module as _module

    def stats(d_an, d_ap):
        return type("S", (), {"num_triplets": 10, "mean_d_an": torch.tensor(d_an), "mean_d_ap": torch.tensor(d_ap)})

    g = torch.Generator().manual_seed(0)
    healthy = torch.nn.functional.normalize(torch.randn(256, 8, generator=g), dim=1)
    centre = torch.nn.functional.normalize(torch.ones(1, 8), dim=1)

    def spread_at(fraction):  # points around one centre whose mean squared distance is ~fraction of healthy's
        for scale in torch.linspace(0.01, 2.0, 400):
            x = torch.nn.functional.normalize(centre + scale * torch.randn(256, 8, generator=g), dim=1)
            if 2 * (1 - x.mean(0).pow(2).sum()) >= fraction * 2 * (1 - healthy.mean(0).pow(2).sum()):
                return x
        raise AssertionError

    cases = [(0.025, (1e-4, 2e-4), 1), (0.025, (0.5, 0.1), 0), (0.5, (1e-4, 2e-4), 0)]
    for fraction, (d_an, d_ap), warned in cases:
        m = _module()
        with caplog.at_level(logging.WARNING):
            _judge(m, healthy, stats(0.8, 0.3))
            _judge(m, spread_at(fraction), stats(d_an, d_ap))
        assert m.collapse.warnings == warned, (fraction, d_an, d_ap)


def test_hardest_negatives_at_a_high_learning_rate_warn_and_a_healthy_run_does_not(tmp_path, caplog):
    """Through train.py: miner=hardest at lr 0.05 collapses and is warned; the default semi-hard run is not."""
    from ..helpers import train_in_process

    for name, overrides, expect in (
        ("hardest", ("miner=hardest", "optimizer.lr=0.05"), True),
        ("semihard", (), False),
    ):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="facenet_pl"):
            train_in_process(tmp_path / name, *overrides, "trainer.max_steps=40", "test=false")
        assert ("embedding collapse" in caplog.text) == expect, (name, caplog.text[-2000:])


def test_the_collapse_reference_travels_with_checkpoints(tmp_path):
    """Through the real Trainer: last.ckpt holds the run's largest spread, and a module restored from it has it."""
    from facenet_pl.training.module import FaceNetModule

    from ..helpers import train_in_process

    train_in_process(tmp_path, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false")
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    saved = ckpt["facenet_pl"]["spread_max"]
    assert 0 < saved <= 4
    restored = FaceNetModule.load_from_checkpoint(
        tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert restored.collapse.spread_max == saved
