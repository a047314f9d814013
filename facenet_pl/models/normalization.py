"""How pixel values become network input (``model.normalization``), and the formula exported models state."""

from __future__ import annotations

import torch

NORMALIZATIONS = ("fixed", "imagenet", "unit")
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_PER_DEVICE: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def check_normalization(mode: str) -> None:
    if mode not in NORMALIZATIONS:
        raise ValueError(f"model.normalization must be one of {NORMALIZATIONS}, got {mode!r}")


def normalize_images(x: torch.Tensor, mode: str) -> torch.Tensor:
    """uint8 or float [0, 255] images -> network input. ``fixed``: (x - 127.5) / 128 (FaceNet); ``imagenet``:
    per-channel mean and std (made once per device: no host-to-device copy per batch); ``unit``: x / 255."""
    check_normalization(mode)
    x = x.float()
    if mode == "fixed":
        return (x - 127.5) / 128.0
    if mode == "unit":
        return x / 255.0
    if x.device not in _PER_DEVICE:
        _PER_DEVICE[x.device] = (
            torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1),
        )
    mean, std = _PER_DEVICE[x.device]
    return (x - mean) / std


def normalization_formula(mode: str) -> str:
    """The formula, in words, that exported model files carry (the network takes normalised input)."""
    check_normalization(mode)
    return {
        "fixed": "(x - 127.5) / 128 on 0..255 pixel values",
        "imagenet": f"(x - mean) / std per channel on 0..255 values, mean {list(IMAGENET_MEAN)}, "
        f"std {list(IMAGENET_STD)}",
        "unit": "x / 255",
    }[mode]
