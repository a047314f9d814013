"""``model.freeze_bn_stats``: BatchNorm keeps and uses its stored statistics while the rest of the network trains
(checked on what train.py actually trained: every step's weights)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import run_train, tiny_module

PROBE = "+callbacks.probe._target_=tests.helpers.RecordWeights"


def _run(tmp_path, freeze: bool) -> list[dict[str, torch.Tensor]]:
    probe = tmp_path / f"weights_{freeze}"
    probe.mkdir()
    r = run_train(
        tmp_path / f"run_{freeze}",
        f"model.freeze_bn_stats={str(freeze).lower()}",
        PROBE,
        f"+callbacks.probe.dir={probe}",
        "trainer.max_epochs=2",
        "data.batches_per_epoch=2",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return [torch.load(probe / f"step{i}.pt", weights_only=True) for i in range(5)]


@pytest.mark.parametrize("freeze", [True, False])
def test_bn_statistics_stay_only_when_frozen(tmp_path, freeze):
    steps = _run(tmp_path, freeze)
    stats = [k for k in steps[0] if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in steps[0] if k.endswith(".weight") and steps[0][k].dim() == 4]  # convolutions
    assert stats and weights
    stats_moved = any(not torch.equal(s[k], steps[0][k]) for s in steps[1:] for k in stats)
    assert stats_moved is not freeze  # 4 steps, across a validation and an epoch boundary
    assert any(not torch.equal(steps[-1][k], steps[0][k]) for k in weights)  # the convolutions learn either way


def test_train_mode_leaves_only_batchnorm_in_eval():
    m = tiny_module(model={"embedding_dim": 8, "freeze_bn_stats": True}).train()
    bn = [x for x in m.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert bn and convs and not any(x.training for x in bn) and all(x.training for x in convs)
    assert all(x.training for x in tiny_module().train().modules())
