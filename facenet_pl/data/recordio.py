"""MXNet RecordIO face sets (insightface's ``train.rec`` / ``train.idx`` / ``property``), read without mxnet.

mxnet is unmaintained and does not install on current Python; the format is small enough to read directly
(dmlc-core ``recordio.h``, mxnet ``recordio.py``):

- A record: ``u32 magic 0xced7230a``, ``u32 lrec = cflag << 29 | length``, ``length`` bytes, zero padding to a
  multiple of 4; little-endian. A writer that meets the magic word at a 4-aligned offset inside the data splits
  the record there (cflag 1 first part, 2 middle, 3 last; 0 a whole record): the reader joins the parts with the
  magic word between them.
- ``.idx``: text lines ``key<TAB>offset``.
- An image record's data: ``IRHeader`` (``<IfQQ``: flag, label, id, id2; 24 bytes), then, if flag > 0, ``flag``
  float32 labels (the first is the identity), then the encoded image (JPEG or PNG).
- insightface's layout: record 0 has flag 2, label ``[first identity record, end)`` and no image; records 1 .. first-1
  are the images; then one record per identity. Sets rewritten by ``shuffle_rec.py`` have no such header
  record: every record is an image.

Reads are positioned (``os.pread``) on one descriptor per process, so DataLoader workers and DDP ranks share a
file without seeking. Labels are read once from every image's header (vectorised through a memory map) and kept
in an index in ``data.cache_dir``. A truncated file, a bad magic word or an offset past the end is one line naming
the file and the record.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facenet_pl.data.images import EncodedImage
from facenet_pl.utils.errors import ConfigError

log = logging.getLogger(__name__)

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEAD = struct.Struct("<II")  # magic, lrec
IR_HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2
_LENGTH_MASK = (1 << 29) - 1
INDEX_VERSION = 1


class RecordIOError(ConfigError):
    """A RecordIO file that cannot be read as one: the message names the file, the record and what to do."""


def _pad4(n: int) -> int:
    return (n + 3) & ~3


class RecordFile:
    """One ``.rec`` file for positioned reads: shared by threads and forked DataLoader workers (``pread`` does not
    move a file position), reopened in a process that unpickled it (spawned workers)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise RecordIOError(f"cannot read {self.path}: {e.strerror}") from None
        self.size, self.mtime_ns = st.st_size, st.st_mtime_ns
        self._fd: int | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def pread(self, n: int, offset: int) -> bytes:
        """``n`` bytes at ``offset`` (fewer only at the end of the file)."""
        fd, parts, got = self._descriptor(), [], 0
        while got < n:
            chunk = os.pread(fd, n - got, offset + got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def record(self, offset: int, key: int | str = "?") -> tuple[bytes, int]:
        """The record at ``offset`` (its split parts joined) and the offset of the record after it."""
        parts, pos = [], int(offset)
        while True:
            if pos < 0 or pos + 8 > self.size:
                raise RecordIOError(
                    f"{self.path}: record {key} at offset {pos} is past the end of the file ({self.size} bytes): the "
                    "file is truncated, or the .idx belongs to another .rec"
                )
            head = self.pread(8, pos)
            if len(head) < 8:  # the file shrank since it was opened
                raise RecordIOError(f"{self.path}: record {key} at offset {pos}: the file is truncated")
            magic, lrec = _HEAD.unpack(head)
            if magic != MAGIC:
                raise RecordIOError(
                    f"{self.path}: no record at offset {pos} (record {key}; found 0x{magic:08x}, not the RecordIO "
                    "magic word 0xced7230a): the file is damaged, or the .idx belongs to another .rec"
                )
            cflag, length = lrec >> 29, lrec & _LENGTH_MASK
            if pos + 8 + length > self.size:
                raise RecordIOError(
                    f"{self.path}: record {key} at offset {pos} holds {length} bytes but the file ends "
                    f"{self.size - pos - 8} bytes later: the file is truncated (download or copy it again)"
                )
            if (cflag in (2, 3)) != bool(parts) or cflag > 3:
                raise RecordIOError(
                    f"{self.path}: record {key} at offset {pos} has continuation flag {cflag} out of sequence: "
                    "the file is damaged, or the .idx points inside a split record"
                )
            part = self.pread(length, pos + 8)
            if len(part) < length:
                raise RecordIOError(
                    f"{self.path}: record {key} at offset {pos}: {len(part)} of its {length} bytes are there: the file "
                    "is truncated"
                )
            parts.append(part)
            pos += 8 + _pad4(length)
            if cflag in (0, 3):
                return MAGIC_BYTES.join(parts), pos


def unpack_image_record(data: bytes, where: str = "record") -> tuple[np.ndarray, bytes]:
    """``(labels float32, encoded image)`` of an image record's data (IRHeader, extra labels, payload)."""
    if len(data) < IR_HEADER.size:
        raise RecordIOError(f"{where}: {len(data)} bytes, shorter than an image record's 24-byte header")
    flag, label, _, _ = IR_HEADER.unpack_from(data)
    if flag == 0:
        return np.array([label], np.float32), data[IR_HEADER.size :]
    end = IR_HEADER.size + 4 * flag
    if end > len(data):
        raise RecordIOError(f"{where}: its header announces {flag} labels but the record ends before them")
    return np.frombuffer(data, "<f4", flag, IR_HEADER.size).astype(np.float32), data[end:]


class RecordImages(Sequence):
    """The image records of a ``.rec`` as a sequence of :class:`EncodedImage` (what image loaders take in place of
    file paths), read on access. ``take(rows)`` selects without reading; a record damaged since it was indexed
    reads as an empty payload (an unreadable image, replaced and counted by the loaders) with a warning."""

    def __init__(self, rec: RecordFile, keys: np.ndarray, offsets: np.ndarray) -> None:
        self.rec, self.keys, self.offsets = rec, np.asarray(keys, np.int64), np.asarray(offsets, np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        key = int(self.keys[i])
        name = f"{self.rec.path}#{key}"
        try:
            data, _ = self.rec.record(int(self.offsets[i]), key)
            _, payload = unpack_image_record(data, name)
        except RecordIOError as e:
            log.warning("%s: read as unreadable", e)
            payload = b""
        return EncodedImage(payload, name)

    def take(self, rows) -> RecordImages:
        rows = np.asarray(rows, np.int64)
        return RecordImages(self.rec, self.keys[rows], self.offsets[rows])

    def cache_identity(self) -> str:
        """What the decoded images depend on (the file and the records chosen), for decode-cache keys."""
        h = hashlib.sha1(self.keys.tobytes())
        return f"rec:{self.rec.path.resolve()}:{self.rec.size}:{self.rec.mtime_ns}:{h.hexdigest()}"


def read_idx(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, offsets)`` of a ``.idx`` file, sorted by key."""
    try:
        text = path.read_bytes()
        cols = np.array(text.split(), dtype=np.int64)
    except OSError as e:
        raise RecordIOError(f"cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise RecordIOError(f"{path}: not a RecordIO index (expected lines 'key<TAB>offset' of integers)") from None
    if cols.size % 2:
        raise RecordIOError(f"{path}: not a RecordIO index (an odd number of fields; lines are 'key<TAB>offset')")
    keys, offsets = cols[0::2], cols[1::2]
    order = np.argsort(keys, kind="stable")
    keys, offsets = keys[order], offsets[order]
    if len(keys) and (np.diff(keys) == 0).any():
        dup = int(keys[np.flatnonzero(np.diff(keys) == 0)[0]])
        raise RecordIOError(f"{path}: key {dup} is listed twice")
    return keys, offsets


def scan_offsets(rec: RecordFile) -> tuple[np.ndarray, np.ndarray]:
    """``(keys 0..n-1, offsets)`` of every record, walking the file (a ``.rec`` without its ``.idx``)."""
    offsets, pos, key = [], 0, 0
    while pos < rec.size:
        offsets.append(pos)
        _, pos = rec.record(pos, key)
        key += 1
    return np.arange(len(offsets), dtype=np.int64), np.array(offsets, np.int64)


def _header_labels(rec: RecordFile, keys: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The first label of each image record (its identity), read from the headers through a memory map (one
    vectorised gather per block); records whose header is split across parts are read whole."""
    if len(offsets) == 0:
        return np.zeros(0, np.int64)
    bad = (offsets < 0) | (offsets + 8 + IR_HEADER.size > rec.size)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        rec.record(int(offsets[i]), int(keys[i]))  # raises the one-line error naming the record
    mm = np.memmap(rec.path, np.uint8, "r", shape=(rec.size,))
    labels = np.empty(len(offsets), np.float64)
    span = np.arange(8 + IR_HEADER.size + 4, dtype=np.int64)  # record head, IRHeader, first extra label
    for start in range(0, len(offsets), 1 << 18):
        o = offsets[start : start + (1 << 18)]
        head = mm[np.minimum(o[:, None] + span, rec.size - 1)]
        words = head[:, :8].copy().view("<u4")
        magic, lrec = words[:, 0], words[:, 1]
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        flag = head[:, 8:12].copy().view("<u4")[:, 0]
        label = head[:, 12:16].copy().view("<f4")[:, 0].astype(np.float64)
        first = head[:, 32:36].copy().view("<f4")[:, 0].astype(np.float64)
        lab = np.where(flag > 0, first, label)
        need = np.where(flag > 0, IR_HEADER.size + 4, IR_HEADER.size)
        odd = (magic != MAGIC) | (cflag == 2) | (cflag == 3) | (o + 8 + length > rec.size) | (length < need)
        for j in np.flatnonzero(odd):  # a damaged record (one-line error) or a header split by the magic word
            i = start + int(j)
            data, _ = rec.record(int(offsets[i]), int(keys[i]))
            lab[j] = float(unpack_image_record(data, f"{rec.path} record {int(keys[i])}")[0][0])
        labels[start : start + len(o)] = lab
    del mm
    if not np.isfinite(labels).all() or (labels != np.round(labels)).any() or (labels < 0).any():
        i = int(np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)) | (labels < 0))[0])
        raise RecordIOError(
            f"{rec.path}: record {int(keys[i])} has identity label {labels[i]!r}, not a whole number >= 0: is this "
            "a face recognition set (insightface layout)?"
        )
    return labels.astype(np.int64)


def find_rec(root: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(train.rec, train.idx or None)`` of ``data.root`` (a folder holding one ``.rec``, or the ``.rec`` itself)."""
    root = Path(root).expanduser()
    if root.is_file():
        rec = root
    elif root.is_dir():
        recs = sorted(root.glob("*.rec"))
        if not recs:
            raise RecordIOError(f"data.root={root}: no .rec file in it (insightface sets hold train.rec + train.idx)")
        rec = root / "train.rec" if (root / "train.rec").is_file() else recs[0]
        if len(recs) > 1 and rec.name != "train.rec":
            raise RecordIOError(
                f"data.root={root} holds {len(recs)} .rec files ({', '.join(r.name for r in recs[:3])}): name one, "
                "data.root=<folder>/<name>.rec"
            )
    else:
        raise RecordIOError(f"data.root={root} does not exist")
    idx = rec.with_suffix(".idx")
    return rec, idx if idx.is_file() else None


def read_property(rec: Path) -> tuple[int, int, int] | None:
    """``(classes, height, width)`` from insightface's ``property`` file beside the ``.rec``, if there is one."""
    prop = rec.parent / "property"
    try:
        fields = [int(v) for v in prop.read_text().strip().split(",")]
    except (OSError, ValueError):
        return None
    return (fields[0], fields[1], fields[2]) if len(fields) == 3 else None


def index_rec(root: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
    """``(RecordImages, identity labels)`` of the image records of a RecordIO set, insightface layout or not.

    The labels come from each image's header (read once; kept in ``cache_dir`` as ``rec-index-<key>.npz``,
    keyed by the ``.rec`` / ``.idx`` paths, sizes and times, so a changed file is indexed again)."""
    from facenet_pl.utils.fileio import atomic_write

    rec_path, idx_path = find_rec(root)
    rec = RecordFile(rec_path)
    ident = f"v{INDEX_VERSION}:{rec_path.resolve()}:{rec.size}:{rec.mtime_ns}"
    if idx_path is not None:
        st = os.stat(idx_path)
        ident += f":{idx_path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    cached = None
    if cache_dir is not None:
        cached = Path(cache_dir).expanduser() / f"rec-index-{hashlib.sha1(ident.encode()).hexdigest()[:16]}.npz"
        if cached.is_file():
            try:
                with np.load(cached, allow_pickle=False) as z:
                    keys, offsets, labels = z["keys"], z["offsets"], z["labels"]
                if len(keys) == len(offsets) == len(labels):
                    return RecordImages(rec, keys, offsets), labels
            except (OSError, ValueError, KeyError):
                pass  # damaged: indexed again
    if idx_path is not None:
        keys, offsets = read_idx(idx_path)
    else:
        log.info("%s has no .idx beside it: walking the file to find its records", rec_path)
        keys, offsets = scan_offsets(rec)
    if len(keys) == 0:
        raise RecordIOError(f"{rec_path}: no records")
    keys, offsets = _image_records(rec, keys, offsets)
    log.info("indexing %d image records of %s (their identity labels, read once)", len(keys), rec_path)
    labels = _header_labels(rec, keys, offsets)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cached, lambda f: np.savez(f, keys=keys, offsets=offsets, labels=labels))
        except OSError as e:
            log.warning("could not keep the index of %s in %s (%s): it is read again next time", rec_path, cached, e)
    return RecordImages(rec, keys, offsets), labels


def _image_records(rec: RecordFile, keys: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image records: 1 .. first-1 under insightface's header record (key 0, flag 2), else every record."""
    if keys[0] != 0:
        return keys, offsets
    data, _ = rec.record(int(offsets[0]), 0)
    if len(data) != IR_HEADER.size + 8 or IR_HEADER.unpack_from(data)[0] != 2:
        return keys, offsets  # record 0 is an image (a shuffled set): it has a payload
    first, end = (int(v) for v in unpack_image_record(data, f"{rec.path} record 0")[0])
    has = set(keys[(keys > 0) & (keys < first)].tolist()) if first > 1 else set()
    if first < 2 or end < first or len(has) != first - 1:
        raise RecordIOError(
            f"{rec.path}: record 0 says images are records 1..{first - 1} and identities {first}..{end - 1}, but the "
            f"index has {len(has)} of those image records: the .idx belongs to another .rec, or the file is damaged"
        )
    sel = (keys >= 1) & (keys < first)
    return keys[sel], offsets[sel]
