"""Training augmentation (``augment=none|flip|standard|strong``): per-image random parameters on the batch,
applied to training batches only, through the real Trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facenet_pl.data.augment import BatchAugment, build_augment
from facenet_pl.utils.errors import ConfigError

from ..helpers import compose_in_process, train_in_process


def _ops(config: str) -> dict:
    from omegaconf import OmegaConf

    cfg = compose_in_process("train", "/tmp/unused", [f"augment={config}"])
    return OmegaConf.to_container(cfg.augment, resolve=True)


@pytest.mark.parametrize(
    "config, names",
    [
        ("none", None),
        ("flip", ["flip"]),
        ("standard", ["flip", "affine", "color", "gray"]),
        ("strong", ["flip", "crop", "affine", "color", "gray", "blur", "jpeg", "erase"]),
    ],
)
def test_each_config_builds_its_ops_and_keeps_shape_and_range(config, names):
    aug = build_augment(_ops(config))
    assert (aug.names if aug else None) == names
    if aug is None:
        return
    x = torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8)  # the crop op resizes to backbone.input_size
    y = aug(x)
    assert y.shape == x.shape and y.dtype == torch.float32 and 0 <= float(y.min()) and float(y.max()) <= 255


def test_flips_are_drawn_per_image():
    """Each image is flipped or not on its own (not the whole batch at once): compare with both references."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (200, 3, 8, 8), dtype=torch.uint8)
    y = build_augment(_ops("flip"))(x)
    same = (y == x.float()).flatten(1).all(1)
    mirrored = (y == x.flip(-1).float()).flatten(1).all(1)
    assert bool((same ^ mirrored).all())  # every image is exactly one of the two
    assert 0.35 < float(mirrored.float().mean()) < 0.65


def test_standard_changes_images_differently():
    torch.manual_seed(0)
    x = torch.full((32, 3, 32, 32), 128, dtype=torch.uint8)
    x[:, :, 8:24, 8:24] = 255
    y = build_augment(_ops("standard"))(x)
    diffs = (y - x.float()).abs().flatten(1).mean(1)
    assert float(diffs.min()) > 0  # every image changed (the affine op has p=1)
    assert len(np.unique(np.round(diffs.numpy(), 3))) > 20  # with its own parameters


def test_a_bad_op_is_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"augment.ops.affine \(kornia.augmentation.RandomAffine\)"):
        build_augment({"ops": {"affine": {"_target_": "kornia.augmentation.RandomAffine", "degreez": 5}}})
    with pytest.raises(ConfigError, match="augment.ops.x: expected a kornia"):
        build_augment({"ops": {"x": 3}})
    assert build_augment({"ops": {"flip": None}}) is None  # augment.ops.flip=null drops it


@pytest.mark.parametrize("config", ["none", "strong"])
def test_only_training_batches_are_augmented(config, tmp_path, monkeypatch):
    """Through Trainer.fit + test: one augmentation call per training step, none in validation or test."""
    calls = []
    forward = BatchAugment.forward

    def counting(self, images):
        calls.append((self.training, images.shape[0]))
        return forward(self, images)

    monkeypatch.setattr(BatchAugment, "forward", counting)
    metrics = train_in_process(tmp_path, f"augment={config}", "trainer.max_epochs=2")
    steps = int(metrics["global_step"])
    assert steps > 0 and "test/acc" in metrics  # validation and the test ran
    if config == "none":
        assert calls == []
    else:
        assert len(calls) == steps and all(n == 4 * 3 for _, n in calls)  # TINY batches: p=4 x k=3
