"""RecordIO face sets (issue 28): files written by ``tests/rec_writer.py`` (the published layout, written
independently of the reader) read back record for record; ``data=rec`` trains through train.py; damaged files are
one line."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from PIL import Image

from facenet_pl.data.recordio import RecordFile, RecordIOError, index_rec, unpack_image_record

from ..helpers import SMALL_IDENTITY_DATA, run_entry
from ..rec_writer import KMAGIC, encode_image, write_raw_records, write_rec

MAGIC = struct.pack("<I", KMAGIC)


def _faces(identities: int, per_identity: int, size: int = 64, seed: int = 3):
    from facenet_pl.data.synthetic import SyntheticFaceConfig, generate_split

    x, y = generate_split(identities, per_identity, seed=seed, split="test", cfg=SyntheticFaceConfig(image_size=size))
    return x.numpy(), y.numpy()


def test_records_split_at_the_magic_word_read_back_whole(tmp_path):
    """The writer splits a record wherever the magic word sits at a 4-aligned offset (first bytes, twice in a row,
    last 4 bytes); unaligned copies are left alone. Every record reads back byte for byte, and each read says
    where the next record starts."""
    rng = np.random.default_rng(0)
    records = [
        b"",
        b"abc",
        MAGIC,
        MAGIC + b"tail",
        b"abcd" + MAGIC + MAGIC + b"xy",
        b"ab" + MAGIC + b"cd",  # unaligned: not split
        rng.bytes(40) + MAGIC + rng.bytes(13) + MAGIC[:3],
        rng.bytes(1000) + MAGIC,
    ]
    path = tmp_path / "raw.rec"
    offsets = write_raw_records(path, records)
    raw = path.read_bytes()
    assert raw.count(MAGIC) > len(records)  # split parts were written (each part has its own header)
    rec = RecordFile(path)
    for i, (data, off) in enumerate(zip(records, offsets)):
        got, nxt = rec.record(off, i)
        assert got == data, i
        assert nxt == (offsets[i + 1] if i + 1 < len(offsets) else len(raw))


@pytest.mark.parametrize("layout", ["insightface", "shuffled"])
@pytest.mark.parametrize("idx", [True, False], ids=["idx", "no-idx"])
def test_images_and_identities_read_back_as_written(tmp_path, layout, idx):
    """Both layouts (insightface's header and identity records; a shuffled set labelled in each image header), with
    and without the .idx: every image record is found once, with its identity and its exact bytes; JPEGs whose
    bytes hold the magic word at aligned offsets (split records) decode to what was encoded."""
    x, y = _faces(6, 4)
    payloads = [encode_image(img) for img in x]
    for i in (1, 6, 13):  # three JPEGs with the magic word in a comment segment, at aligned record offsets
        payloads[i] = encode_image(x[i], "jpeg", comment=b"\0\0" + MAGIC * 3 + b"!")
    write_rec(tmp_path / "set", payloads, y, layout=layout, idx=idx)
    if not idx:
        assert not (tmp_path / "set" / "train.idx").exists()
    images, labels = index_rec(tmp_path / "set", tmp_path / "cache")
    assert len(images) == len(payloads) == len(labels)
    seen = {}
    for i in range(len(images)):
        data = images[i].getvalue()
        j = payloads.index(data)  # each written payload once
        assert j not in seen and labels[i] == y[j]
        seen[j] = i
    assert sorted(seen) == list(range(len(payloads)))
    for j in (0, 1, 13):  # what the image loaders get: a file object PIL opens
        decoded = np.asarray(Image.open(images[seen[j]]).convert("RGB")).transpose(2, 0, 1)
        if j == 0:  # PNG: lossless
            assert np.array_equal(decoded, x[j])
        else:  # JPEG (q95, noisy synthetic skin): the same face, not noise
            assert np.abs(decoded.astype(int) - x[j]).mean() < 12 < np.abs(decoded.astype(int) - x[j + 1]).mean()


def test_the_index_is_kept_and_redone_when_the_file_changes(tmp_path):
    x, y = _faces(3, 3)
    write_rec(tmp_path / "set", [encode_image(i) for i in x], y)
    index_rec(tmp_path / "set", tmp_path / "cache")
    kept = list((tmp_path / "cache").glob("rec-index-*.npz"))
    assert len(kept) == 1
    _, labels = index_rec(tmp_path / "set", tmp_path / "cache")
    assert sorted(labels.tolist()) == sorted(y.tolist())
    write_rec(tmp_path / "set", [encode_image(i) for i in x[:6]], y[:6])  # rewritten: another index
    _, labels = index_rec(tmp_path / "set", tmp_path / "cache")
    assert len(labels) == 6 and len(list((tmp_path / "cache").glob("rec-index-*.npz"))) == 2


def _damage(folder, how: str) -> str:
    rec, idx = folder / "train.rec", folder / "train.idx"
    lines = [ln.split("\t") for ln in idx.read_text().split("\n") if ln]
    if how == "truncated":
        data = rec.read_bytes()
        rec.write_bytes(data[: len(data) * 2 // 3])
        return "truncated"
    if how == "offset past the end":
        lines[3][1] = str(rec.stat().st_size + 4000)
        idx.write_text("".join(f"{k}\t{o}\n" for k, o in lines))
        return "past the end"
    if how == "bad magic":
        lines[3][1] = str(int(lines[3][1]) + 4)
        idx.write_text("".join(f"{k}\t{o}\n" for k, o in lines))
        return "magic word"
    if how == "not an index":
        idx.write_text("0\t0\nhello\n")
        return "not a RecordIO index"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated", "offset past the end", "bad magic", "not an index"])
def test_a_damaged_set_is_one_line_naming_the_record(tmp_path, how):
    x, y = _faces(4, 3)
    write_rec(tmp_path / "set", [encode_image(i) for i in x], y)
    said = _damage(tmp_path / "set", how)
    with pytest.raises(RecordIOError, match=said) as e:
        index_rec(tmp_path / "set", None)
    assert "\n" not in str(e.value) and "train" in str(e.value)
    if how in ("offset past the end", "bad magic"):
        assert "record 3" in str(e.value)


def test_a_record_damaged_after_indexing_is_an_unreadable_image_not_a_crash(tmp_path, caplog):
    x, y = _faces(3, 3)
    write_rec(tmp_path / "set", [encode_image(i) for i in x], y)
    images, _ = index_rec(tmp_path / "set", None)
    last = int(images.offsets.max())
    with open(tmp_path / "set" / "train.rec", "r+b") as f:  # cut inside the last image record, after indexing
        f.truncate(last + 40)
    assert images.take([int(images.offsets.argmax())])[0].getvalue() == b""
    assert "truncated" in caplog.text


def test_unpack_reads_extra_labels():
    payload = b"\xff\xd8jpeg"
    data = struct.pack("<IfQQ", 2, 0.0, 0, 0) + np.array([7, 3], "<f4").tobytes() + payload
    labels, got = unpack_image_record(data)
    assert labels.tolist() == [7.0, 3.0] and got == payload
    labels, got = unpack_image_record(struct.pack("<IfQQ", 0, 5.0, 0, 0) + payload)
    assert labels.tolist() == [5.0] and got == payload


# -- data=rec through train.py ------------------------------------------------------------------------------------

REC = ["data=rec", *SMALL_IDENTITY_DATA]


@pytest.fixture(scope="module")
def rec_set(tmp_path_factory):
    """32 people x 4 faces (64 px JPEG, as insightface packs them), insightface layout: 24 to train on, 4 validation
    and 4 test people."""
    folder = tmp_path_factory.mktemp("rec")
    x, y = _faces(32, 4)
    write_rec(folder / "set", [encode_image(i, "jpeg") for i in x], y, size=64)
    return folder / "set"


@pytest.mark.parametrize(
    "mode",
    [
        ["data.cache=true"],
        ["data.cache=false", "data.num_workers=2"],
        ["data.cache=false", "data.decode_on=device"],
    ],
    ids=["cache", "workers", "device"],
)
def test_train_py_trains_on_a_rec_set(tmp_path, rec_set, mode):
    r = run_entry(
        "train.py",
        *REC,
        f"data.root={rec_set}",
        f"data.cache_dir={tmp_path / 'cache'}",
        *mode,
        "trainer.max_epochs=2",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 2 * 24 // 4 and metrics["test/identities"] == 4
    assert 0 <= metrics["test/acc"] <= 1 and np.isfinite(metrics["val/acc"])
    if mode == ["data.cache=true"]:
        assert len(list((tmp_path / "cache").glob("images-*.npy"))) == 1


def test_train_py_on_a_damaged_rec_is_one_line(tmp_path, rec_set):
    import shutil

    broken = shutil.copytree(rec_set, tmp_path / "broken")
    _damage(broken, "bad magic")
    r = run_entry("train.py", *REC, f"data.root={broken}", f"hydra.run.dir={tmp_path / 'run'}")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1 and "record 3" in lines[0] and "Traceback" not in r.stderr


def test_data_rec_refuses_what_does_not_apply(tmp_path, rec_set):
    r = run_entry(
        "train.py", *REC, f"data.root={rec_set}", "data.include=['*.jpg']", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert r.returncode == 1 and "data.include" in r.stderr and "data=rec" in r.stderr
    r = run_entry("train.py", *REC, f"data.root={tmp_path / 'nothing'}", f"hydra.run.dir={tmp_path / 'run2'}")
    assert r.returncode == 1 and "does not exist" in r.stderr
