"""Image folders: scan identity folders, decode robustly, and cache decoded uint8 arrays.

Decoding JPEGs is the expensive part of face data on a CPU. ``decode_images`` decodes once
(in parallel DataLoader workers), centre-crops and resizes;
:func:`facenet_pl.data.decode_cache.cached_decode` stores the result in a checked on-disk cache that later
runs memory-map.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)


def scan_identity_folders(
    root: str | Path,
    min_images: int = 1,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files under ``root/<identity>/`` (any depth, any or no extension) with integer labels.

    Hidden files are ignored; symlinked folders are not followed (no loops). ``include`` / ``exclude``: glob
    patterns (``*Ambient*``, ``*.bad``) matched against each file's path relative to ``root`` (``*`` crosses
    folders); a file is kept if it matches some ``include`` pattern (when any are given) and no ``exclude``
    pattern; how many were left out is logged. Identities with fewer than ``min_images`` files are left out.
    Returns (paths, labels, identity names). The listing is :func:`facenet_pl.data.file_index.scan_tree`'s
    (``data=folder`` keeps it as an index between runs).
    """
    from facenet_pl.data.file_index import scan_tree, select_files

    paths, labels, names, _ = select_files(scan_tree(root), min_images, include, exclude)
    return [Path(p) for p in paths], labels, names


class EncodedImage(io.BytesIO):
    """An image's encoded bytes (a RecordIO record's, a ``.bin`` benchmark set's) as a file object that every loader
    here takes in place of a path (PIL opens it as it opens a file); named for messages."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name

    __repr__ = __str__


_UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _open_rgb(path: str | Path, grayscale: bool = False) -> Image.Image:
    """The file as an 8-bit RGB PIL image, upright (EXIF orientation applied); 16-bit gray scaled to 8 bits."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 8 bits
            arr = np.asarray(im, dtype=np.float32)
            im = Image.fromarray((arr * (255.0 / max(float(arr.max()), 1.0))).astype(np.uint8))
        return im.convert("L").convert("RGB") if grayscale else im.convert("RGB")


def load_rgb(path: str | Path) -> np.ndarray | None:
    """The whole image as RGB uint8 (H, W, 3), upright; None if unreadable (as :func:`load_image`)."""
    try:
        return np.asarray(_open_rgb(path), dtype=np.uint8).copy()
    except _UNREADABLE:
        return None


#: How a non-square image becomes square: centre ``crop`` (default), ``pad`` (black borders), ``stretch``.
FIT_MODES = ("crop", "pad", "stretch")
#: How a non-square image becomes square when nothing says otherwise (``data.fit``'s default).
DEFAULT_FIT = "crop"


def load_image_settings(preprocess: dict | None) -> dict:
    """A model's stored ``preprocess`` (the data's ``crop_size``, ``fit``, ``grayscale``) as :func:`load_image`'s
    ``crop``, ``fit`` and ``grayscale`` arguments: how image files become that model's input."""
    preprocess = preprocess or {}
    return {
        "crop": preprocess.get("crop_size"),
        "fit": preprocess.get("fit", DEFAULT_FIT),
        "grayscale": bool(preprocess.get("grayscale", False)),
    }


def load_image(
    path: str | Path, size: int, crop: int | None = None, fit: str = DEFAULT_FIT, grayscale: bool = False
) -> np.ndarray | None:
    """RGB uint8 (3, size, size): optional centre crop of ``crop`` px, then made square by ``fit``, then resized.
    None if unreadable.

    Grayscale, palette, RGBA and 16-bit images are converted to 8-bit RGB; the EXIF orientation tag is applied
    (a phone photo taken upright is upright). ``grayscale``: converted to gray first (3 equal channels), so colour
    and gray sources look alike. ``fit`` keeps the aspect ratio of a non-square image (``crop``: the centre
    square; ``pad``: the whole image on a black square) or not (``stretch``). Broken symlinks and symlink loops
    are unreadable (None).
    """
    if fit not in FIT_MODES:
        raise ValueError(f"fit={fit!r}: expected one of {FIT_MODES}")
    try:
        with _open_rgb(path, grayscale) as im:
            if crop:
                w, h = im.size
                c = min(crop, w, h)
                left, top = (w - c) // 2, (h - c) // 2
                im = im.crop((left, top, left + c, top + c))
            w, h = im.size
            if w != h and fit == "crop":
                c = min(w, h)
                left, top = (w - c) // 2, (h - c) // 2
                im = im.crop((left, top, left + c, top + c))
            elif w != h and fit == "pad":
                c = max(w, h)
                square = Image.new("RGB", (c, c))
                square.paste(im, ((c - w) // 2, (c - h) // 2))
                im = square
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
    except _UNREADABLE:
        return None


def gray_fraction(images: np.ndarray, rows: np.ndarray | None = None, sample: int = 2000, seed: int = 0) -> float:
    """Fraction of the images (a random sample of at most ``sample`` of ``rows``) whose 3 channels are equal:
    gray sources (PGM, gray JPEG) decode to 3 equal channels."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    if len(rows) == 0:
        return 0.0
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, sample, replace=False))
    x = np.asarray(images[rows])
    gray = (x[:, 0] == x[:, 1]).all(axis=(1, 2)) & (x[:, 1] == x[:, 2]).all(axis=(1, 2))
    return float(gray.mean())


class _Decode(Dataset):
    def __init__(self, paths: Sequence[Path], size: int, crop: int | None, fit: str, grayscale: bool) -> None:
        self.paths, self.size, self.crop, self.fit, self.grayscale = paths, size, crop, fit, grayscale

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = load_image(self.paths[i], self.size, self.crop, self.fit, self.grayscale)
        ok = img is not None
        return (torch.from_numpy(img) if ok else torch.zeros(3, self.size, self.size, dtype=torch.uint8)), ok


def decode_images(
    paths: Sequence[Path],
    size: int,
    crop: int | None = None,
    num_workers: int = 0,
    batch_size: int = 256,
    fit: str = DEFAULT_FIT,
    grayscale: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode all ``paths`` (:func:`load_image`): uint8 (N, 3, size, size) and a bool mask of readable files."""
    out = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    loader = DataLoader(_Decode(paths, size, crop, fit, grayscale), batch_size=batch_size, num_workers=num_workers)
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
