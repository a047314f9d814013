"""Image folders: scan identity folders, decode robustly, and cache decoded uint8 arrays.

Decoding JPEGs is the expensive part of face data on a CPU. ``decode_images`` decodes once
(in parallel DataLoader workers), centre-crops and resizes;
:func:`facenet_pl.data.decode_cache.cached_decode` stores the result in a checked on-disk cache that later
runs memory-map.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)


def scan_identity_folders(root: str | Path, min_images: int = 1) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files under ``root/<identity>/`` (any depth, any or no extension) with integer labels.

    Hidden files are ignored; symlinked folders are not followed (no loops). Identities with
    fewer than ``min_images`` files are left out. Returns (paths, labels, identity names).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={str(root)!r} is not a directory (expected one sub-folder per identity)")
    names, paths, labels = [], [], []
    for ident in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = []
        for dirpath, dirnames, filenames in os.walk(ident, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
        if len(files) >= min_images:
            labels += [len(names)] * len(files)
            names.append(ident.name)
            paths += files
    if not names:
        raise ValueError(f"data.root={str(root)!r} has no identity sub-folder with >= {min_images} files")
    return paths, np.asarray(labels, dtype=np.int64), names


def load_image(path: str | Path, size: int, crop: int | None = None) -> np.ndarray | None:
    """RGB uint8 (3, size, size): optional centre crop of ``crop`` px, then resize. None if unreadable.

    Grayscale, palette, RGBA and 16-bit images are converted to 8-bit RGB; the EXIF orientation tag is applied
    (a phone photo taken upright is upright). Broken symlinks and symlink loops are unreadable (None).
    """
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 8 bits
                arr = np.asarray(im, dtype=np.float32)
                im = Image.fromarray((arr * (255.0 / max(float(arr.max()), 1.0))).astype(np.uint8))
            im = im.convert("RGB")
            if crop:
                w, h = im.size
                c = min(crop, w, h)
                left, top = (w - c) // 2, (h - c) // 2
                im = im.crop((left, top, left + c, top + c))
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


class _Decode(Dataset):
    def __init__(self, paths: Sequence[Path], size: int, crop: int | None) -> None:
        self.paths, self.size, self.crop = paths, size, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = load_image(self.paths[i], self.size, self.crop)
        ok = img is not None
        return (torch.from_numpy(img) if ok else torch.zeros(3, self.size, self.size, dtype=torch.uint8)), ok


def decode_images(paths: Sequence[Path], size: int, crop: int | None = None, num_workers: int = 0,
                  batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Decode all ``paths``: uint8 (N, 3, size, size) and a bool mask of files that could be read."""
    out = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    loader = DataLoader(_Decode(paths, size, crop), batch_size=batch_size, num_workers=num_workers)
    start = 0
    for imgs, good in loader:
        out[start : start + len(imgs)] = imgs.numpy()
        ok[start : start + len(imgs)] = good.numpy()
        start += len(imgs)
    return out, ok


def report_unreadable(paths: Sequence[Path], ok: np.ndarray, what: str) -> None:
    """Warn once, with a count and examples, about files that could not be decoded."""
    bad = np.flatnonzero(~ok)
    if len(bad):
        examples = ", ".join(str(paths[i]) for i in bad[:3])
        msg = f"{what}: skipped {len(bad)} unreadable or non-image file(s) of {len(paths)} (e.g. {examples})"
        log.warning(msg)
        warnings.warn(msg, stacklevel=2)
