"""JPEG decoding on the training device (``data.cache=false data.decode_on=device``).

A GPU that trains 2,000-7,000 images/s needs that many JPEGs decoded per second; on CPU that is several cores
per GPU (``benchmarks/bench_folder_scale.py`` measures the rate per core). With ``decode_on=device`` the
DataLoader workers only read the files: a JPEG travels as its encoded bytes, and the whole batch is decoded in
one ``torchvision.io.decode_jpeg`` call on the device (nvjpeg on CUDA), then cropped / padded to a square and
resized there. Files that are not JPEG (PNG, PGM, ...) are decoded by the worker as usual. On a CPU-only machine
the same path decodes the batch on the CPU in the training process (what the tests run).
"""

from __future__ import annotations

import logging

import torch

from facenet_pl.data.datasets import FileFaceDataset, read_source
from facenet_pl.data.images import DEFAULT_FIT

log = logging.getLogger(__name__)

DECODE_ON = ("worker", "device")
_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"  # a truncated download lacks it


def _too_many_pixels(data: bytes) -> bool:
    """Whether the JPEG's header declares more pixels than PIL decodes (twice ``Image.MAX_IMAGE_PIXELS``: a
    decompression bomb). Read from the header alone: a 20000 x 20000 JPEG of a few MB would take 1.2 GB to decode
    on the device; the worker's PIL path refuses it and the image is replaced like an unreadable one."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:  # parses the header only
            w, h = im.size
    except Image.DecompressionBombError:
        return True
    except Exception:  # noqa: BLE001 - a header PIL cannot parse: the worker decodes (and judges) it
        return True
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and w * h > 2 * limit


class EncodedFaceDataset(FileFaceDataset):
    """:class:`FileFaceDataset` whose JPEG files are returned encoded (1-D uint8 tensors of the file's bytes) for
    :func:`decode_on_device`; other files are decoded here as in :class:`FileFaceDataset`."""

    def _load(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            data = read_source(self.paths[i])
        except OSError:
            data = b""
        if data[:3] == _JPEG_MAGIC and data.rstrip(b"\0")[-2:] == _JPEG_END and not _too_many_pixels(data):
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), i
        # not a JPEG, a truncated one, or unreadable: decoded in the worker (an unreadable file is replaced by
        # another image of the same person there)
        return super()._load(i)

    def _batch(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        return images  # encoded and decoded images of different shapes: decode_on_device makes the tensor


def _square(img: torch.Tensor, size: int, crop: int | None, fit: str) -> torch.Tensor:
    """(C, H, W) uint8 -> (3, size, size) uint8: centre crop of ``crop`` px, made square by ``fit``, resized
    (bilinear, antialiased), as :func:`facenet_pl.data.images.load_image` does with PIL."""
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    h, w = img.shape[-2:]
    if crop:
        c = min(crop, h, w)
        top, left = (h - c) // 2, (w - c) // 2
        img = img[:, top : top + c, left : left + c]
        h, w = img.shape[-2:]
    if h != w and fit == "crop":
        c = min(h, w)
        top, left = (h - c) // 2, (w - c) // 2
        img = img[:, top : top + c, left : left + c]
    elif h != w and fit == "pad":
        c = max(h, w)
        out = img.new_zeros(3, c, c)
        top, left = (c - h) // 2, (c - w) // 2
        out[:, top : top + h, left : left + w] = img
        img = out
    if tuple(img.shape[-2:]) == (size, size):
        return img
    x = torch.nn.functional.interpolate(img[None].float(), size=(size, size), mode="bilinear", antialias=True)
    return x[0].round_().clamp_(0, 255).to(torch.uint8)


def decode_on_device(
    images: list[torch.Tensor],
    device: torch.device | str,
    size: int,
    crop: int | None = None,
    fit: str = DEFAULT_FIT,
    grayscale: bool = False,
) -> torch.Tensor:
    """A batch from :class:`EncodedFaceDataset` -> uint8 (N, 3, size, size) on ``device``: the encoded JPEGs
    decoded in one ``decode_jpeg`` call there (EXIF orientation applied), the rest moved as they are. A JPEG that
    fails to decode in the batch call is decoded alone; if that fails too it becomes a black image, with a
    warning naming the batch position (an encoded file that is not a valid JPEG)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if grayscale else ImageReadMode.RGB
    device = torch.device(device)
    encoded = [i for i, t in enumerate(images) if t.dim() == 1]
    out: list[torch.Tensor | None] = [None] * len(images)
    if encoded:
        data = [images[i].cpu() for i in encoded]  # decode_jpeg reads the bytes from CPU memory
        try:
            decoded = decode_jpeg(data, mode=mode, device=device, apply_exif_orientation=True)
        except RuntimeError:
            decoded = []
            for pos, d in zip(encoded, data):
                try:
                    decoded.append(decode_jpeg(d, mode=mode, device=device, apply_exif_orientation=True))
                except RuntimeError as e:
                    log.warning("batch position %d: not a decodable JPEG (%s): a black image is used", pos, e)
                    decoded.append(torch.zeros(1 if grayscale else 3, size, size, dtype=torch.uint8, device=device))
        for pos, img in zip(encoded, decoded):
            out[pos] = _square(img, size, crop, fit)
    for i, t in enumerate(images):
        if out[i] is None:
            out[i] = t.to(device)
    return torch.stack(out)  # type: ignore[arg-type]


def check_decode_on(decode_on: str, cache: bool) -> None:
    """``data.decode_on`` is one of :data:`DECODE_ON`, and ``device`` only without a cache."""
    from facenet_pl.utils.errors import ConfigError

    if decode_on not in DECODE_ON:
        raise ConfigError(f"data.decode_on={decode_on!r}: expected one of {', '.join(DECODE_ON)}")
    if decode_on == "device" and cache:
        raise ConfigError(
            "data.decode_on=device decodes training batches from the files: it needs data.cache=false (a cache "
            "holds images decoded once already)"
        )
