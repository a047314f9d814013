"""An MXNet RecordIO writer written from the published layout (dmlc-core ``recordio.h`` / ``WriteRecord``, mxnet
``recordio.pack``, insightface's header record), independent of ``facenet_pl.data.recordio``: the tests read
what it writes. Also used by ``benchmarks/bench_rec.py`` to make a large set."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

KMAGIC = 0xCED7230A


def encode_lrec(cflag: int, length: int) -> int:
    return (cflag << 29) | length


def write_record(f, data: bytes) -> int:
    """dmlc ``RecordIOWriter::WriteRecord``: the magic word at a 4-aligned offset of ``data`` splits the record
    (cflag 1 first part, 2 middle, 3 last); parts are written without the magic word; zero padding to 4 bytes.
    Returns the offset the record starts at."""
    start = f.tell()
    magic = struct.pack("<I", KMAGIC)
    n = len(data)
    lower_align = (n >> 2) << 2
    upper_align = ((n + 3) >> 2) << 2
    dptr = 0
    for i in range(0, lower_align, 4):
        if data[i : i + 4] == magic:
            f.write(struct.pack("<II", KMAGIC, encode_lrec(1 if dptr == 0 else 2, i - dptr)))
            f.write(data[dptr:i])
            dptr = i + 4
    f.write(struct.pack("<II", KMAGIC, encode_lrec(3 if dptr != 0 else 0, n - dptr)))
    f.write(data[dptr:])
    f.write(b"\0" * (upper_align - n))
    return start


def pack(label, payload: bytes, id_: int = 0, id2: int = 0) -> bytes:
    """mxnet ``recordio.pack``: IRHeader ``IfQQ``; a label array sets flag = its size and precedes the payload."""
    if isinstance(label, int | float):
        return struct.pack("<IfQQ", 0, float(label), id_, id2) + payload
    arr = np.asarray(label, dtype="<f4")
    return struct.pack("<IfQQ", arr.size, 0.0, id_, id2) + arr.tobytes() + payload


def encode_image(img: np.ndarray, fmt: str = "png", comment: bytes = b"") -> bytes:
    """(3, H, W) uint8 -> PNG or JPEG bytes; ``comment``: a JPEG COM segment right after SOI (arbitrary bytes
    inside a valid JPEG: how the tests put the magic word into a payload)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img.transpose(1, 2, 0)).save(buf, format="PNG" if fmt == "png" else "JPEG", quality=95)
    data = buf.getvalue()
    if comment:
        assert fmt == "jpeg"
        data = data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]
    return data


def write_rec(
    folder: Path,
    images: Sequence[bytes],
    labels: Sequence[int],
    layout: str = "insightface",
    idx: bool = True,
    size: int = 112,
    seed: int = 0,
) -> Path:
    """``folder/train.rec`` (+ ``train.idx``, ``property``).

    ``layout="insightface"``: record 0 (label [first identity record, end)), images 1..N grouped by identity with a
    scalar label, one record per identity (label [start, end)). ``"shuffled"``: as ``shuffle_rec.py`` leaves a
    set: no header record, the images in a random order, each labelled with an array [identity, 1.0] (flag 2)."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels)
    offsets: list[tuple[int, int]] = []
    with open(folder / "train.rec", "wb") as f:
        if layout == "insightface":
            order = np.argsort(labels, kind="stable")
            ids = np.unique(labels)
            first = len(images) + 1
            offsets.append((0, write_record(f, pack([first, first + len(ids)], b""))))
            starts = {}
            for key, i in enumerate(order.tolist(), start=1):
                starts.setdefault(int(labels[i]), key)
                offsets.append((key, write_record(f, pack(int(labels[i]), images[i]))))
            for j, ident in enumerate(ids.tolist()):
                s = starts[ident]
                offsets.append((first + j, write_record(f, pack([s, s + int((labels == ident).sum())], b""))))
        elif layout == "shuffled":
            order = np.random.default_rng(seed).permutation(len(images))
            for key, i in enumerate(order.tolist()):
                offsets.append((key, write_record(f, pack([int(labels[i]), 1.0], images[i]))))
        else:
            raise ValueError(layout)
    if idx:
        (folder / "train.idx").write_text("".join(f"{k}\t{o}\n" for k, o in offsets))
    (folder / "property").write_text(f"{len(np.unique(labels))},{size},{size}")
    return folder / "train.rec"


def write_raw_records(path: Path, records: Iterable[bytes]) -> list[int]:
    """Arbitrary records (no IRHeader) and their offsets, for format-level tests."""
    with open(path, "wb") as f:
        return [write_record(f, r) for r in records]
