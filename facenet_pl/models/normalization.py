"""How pixel values become network input (``model.normalization``), and the formula exported models state."""

from __future__ import annotations

import torch

NORMALIZATIONS = ("fixed", "imagenet", "unit", "prewhiten", "dlib")
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
#: dlib's ``input_rgb_image_sized``: the face model's per-channel means (R, G, B), subtracted before dividing by 256.
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
_PER_DEVICE: dict[tuple[torch.device, str], tuple[torch.Tensor, torch.Tensor]] = {}


def check_normalization(mode: str) -> None:
    if mode not in NORMALIZATIONS:
        raise ValueError(f"model.normalization must be one of {NORMALIZATIONS}, got {mode!r}")


def normalize_images(x: torch.Tensor, mode: str) -> torch.Tensor:
    """uint8 or float [0, 255] images -> network input. ``fixed``: (x - 127.5) / 128 (FaceNet); ``imagenet``:
    per-channel mean and std (made once per device: no host-to-device copy per batch); ``unit``: x / 255;
    ``prewhiten``: each image minus its own mean, over its own standard deviation (at least 1 / sqrt(pixels)),
    davidsandberg/facenet's ``prewhiten``; ``dlib``: (x - dlib's per-channel mean) / 256, dlib's face model."""
    check_normalization(mode)
    x = x.float()
    if mode == "fixed":
        return (x - 127.5) / 128.0
    if mode == "unit":
        return x / 255.0
    if mode == "prewhiten":
        flat = x.flatten(1)
        mean = flat.mean(1).view(-1, 1, 1, 1)
        std = flat.std(1, correction=0).clamp_min(flat.shape[1] ** -0.5).view(-1, 1, 1, 1)
        return (x - mean) / std
    key = (x.device, mode)
    if key not in _PER_DEVICE:
        mean, std = (DLIB_MEAN_RGB, (256.0,) * 3) if mode == "dlib" else (IMAGENET_MEAN, IMAGENET_STD)
        _PER_DEVICE[key] = (
            torch.tensor(mean, device=x.device).view(1, 3, 1, 1),
            torch.tensor(std, device=x.device).view(1, 3, 1, 1),
        )
    mean, std = _PER_DEVICE[key]
    return (x - mean) / std


def normalization_formula(mode: str) -> str:
    """The formula, in words, that exported model files carry (the network takes normalised input)."""
    check_normalization(mode)
    return {
        "fixed": "(x - 127.5) / 128 on 0..255 pixel values",
        "imagenet": f"(x - mean) / std per channel on 0..255 values, mean {list(IMAGENET_MEAN)}, "
        f"std {list(IMAGENET_STD)}",
        "unit": "x / 255",
        "prewhiten": "(x - mean(x)) / max(std(x), 1 / sqrt(x.size)) per image, over all its 0..255 values",
        "dlib": f"(x - mean) / 256 per channel on 0..255 values, mean {list(DLIB_MEAN_RGB)}",
    }[mode]
