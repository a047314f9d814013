"""Test-time image degradation, as in FaceNet's Tables 3 and 4: JPEG re-encoding and lower resolution.

The images a model is evaluated on are re-encoded as JPEG at quality ``q`` and/or shrunk to ``s`` pixels a
side and scaled back to the size the network takes, so the network sees fewer real pixels at its usual
input size. Training images are never degraded by this (augmentation is ``conf/augment``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from facenet_pl.utils.errors import ConfigError


@dataclass(frozen=True)
class Degradation:
    """``jpeg_quality`` in 1..100 (None: no re-encoding); ``image_size`` in pixels (None: unchanged).

    Shrinking happens first (antialiased bilinear), then the JPEG round trip, then the image goes back to
    its original size (bilinear), so both settings together mean "a small JPEG, upscaled".
    """

    jpeg_quality: int | None = None
    image_size: int | None = None

    def __post_init__(self) -> None:
        q, s = self.jpeg_quality, self.image_size
        if q is not None and not (isinstance(q, int) and 1 <= q <= 100):
            raise ConfigError(f"degrade.jpeg_quality={q!r}: give an integer from 1 to 100, or null for none")
        if s is not None and not (isinstance(s, int) and s >= 2):
            raise ConfigError(f"degrade.image_size={s!r}: give a side length in pixels (>= 2), or null for none")

    @classmethod
    def from_config(cls, cfg) -> Degradation:
        """From a ``degrade:`` mapping (or None)."""
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"jpeg_quality", "image_size"}
        if unknown:
            raise ConfigError(f"degrade.{sorted(unknown)[0]} is not an option: degrade takes jpeg_quality, image_size")
        return cls(cfg.get("jpeg_quality"), cfg.get("image_size"))

    @property
    def active(self) -> bool:
        return self.jpeg_quality is not None or self.image_size is not None

    def describe(self) -> dict[str, int | None]:
        return {"jpeg_quality": self.jpeg_quality, "image_size": self.image_size}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Degrade a uint8 batch (N, C, H, W) with C 1 or 3; returns uint8 of the same shape."""
        if not self.active or len(images) == 0:
            return images
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(f"Degradation expects uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
        h, w = images.shape[-2:]
        out = images
        if self.image_size is not None:
            size = (self.image_size, self.image_size)
            small = F.interpolate(out.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
            out = small.round().clamp(0, 255).to(torch.uint8)
        if self.jpeg_quality is not None:
            encoded = encode_jpeg(list(out.cpu().contiguous()), quality=self.jpeg_quality)
            out = torch.stack(decode_jpeg(encoded)).to(images.device)
        if out.shape[-2:] != (h, w):
            out = F.interpolate(out.float(), size=(h, w), mode="bilinear", align_corners=False)
            out = out.round().clamp(0, 255).to(torch.uint8)
        return out
