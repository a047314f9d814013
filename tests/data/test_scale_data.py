"""Data at scale: the file index (scanned once, reused until the tree changes) and the streaming, resumable
decode cache. Large-tree timings are benchmarks (benchmarks/bench_folder_scale.py); these check behaviour."""

from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import pytest
import torch

from facenet_pl.data import decode_cache, file_index
from facenet_pl.data.decode_cache import CacheFiles, cache_key, cached_decode
from facenet_pl.data.file_index import load_index, select_files
from facenet_pl.data.images import decode_images, scan_identity_folders

from ..helpers import write_face_folders
from ..references import walk_identity_folders


@pytest.fixture
def tree(tmp_path):
    root = write_face_folders(tmp_path / "faces", identities=6, per_identity=5)
    nested = root / "person0" / "extra"  # a sub-folder inside an identity: still that identity
    nested.mkdir()
    (root / "person0" / "0.png").rename(nested / "0.png")
    (root / "person1" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


# -- the file index -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "include,exclude,min_images",
    [(None, None, 1), ("*.png", None, 1), (None, ["*notes*", "*/extra/*"], 5)],
)
def test_index_selects_the_files_a_plain_walk_finds(tree, tmp_path, include, exclude, min_images):
    """Reference: a plain sorted os.walk (tests/references.py): same files, same order, same labels and names."""
    index = load_index(tree, tmp_path / "cache")
    paths, labels, names, rows = select_files(index, min_images, include, exclude)
    ref_paths, ref_labels, ref_names = walk_identity_folders(tree, min_images, include, exclude)
    assert paths == [str(p) for p in ref_paths] and names == ref_names
    assert np.array_equal(labels, ref_labels)
    assert [os.stat(p).st_size for p in paths] == index.sizes[rows].tolist()


def test_index_is_reused_until_the_tree_changes(tree, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_index(tree, cache)
    assert first.source == "scanned" and len(list(cache.glob("index-*"))) == 2
    scans = []
    real_scan = file_index.scan_tree
    monkeypatch.setattr(file_index, "scan_tree", lambda *a, **k: (scans.append(1), real_scan(*a, **k))[1])
    again = load_index(tree, cache)
    assert again.source == "reused" and not scans and again.rel == first.rel
    assert np.array_equal(again.mtimes, first.mtimes)

    (tree / "person3" / "new.png").write_bytes(sorted((tree / "person3").iterdir())[0].read_bytes())  # a file added
    added = load_index(tree, cache)
    assert added.source == "scanned" and "person3/new.png" in added.rel and len(scans) == 1
    assert load_index(tree, cache).source == "reused"

    # A file rewritten in place under the same name: the folder's mtime is restored (as a copy tool may),
    # so only the per-file check (index_check=files, the default) can see it.
    target = sorted((tree / "person2").iterdir())[0]
    folder_mtime = os.stat(target.parent).st_mtime_ns
    os.utime(target, ns=(1, 1))
    os.utime(target.parent, ns=(folder_mtime, folder_mtime))
    assert load_index(tree, cache, check="dirs").source == "reused"  # the documented trade-off of "dirs"
    assert load_index(tree, cache, check="files").source == "scanned"


@pytest.mark.parametrize("damage", ["truncated rows", "garbled meta", "rows of another tree"])
def test_a_damaged_index_is_rescanned_not_trusted(tree, tmp_path, damage, caplog):
    import logging

    cache = tmp_path / "cache"
    first = load_index(tree, cache)
    rows = next(cache.glob("index-*.csv"))
    meta = next(cache.glob("index-*.json"))
    if damage == "truncated rows":
        rows.write_text("\n".join(rows.read_text().splitlines()[:-3]) + "\n")
    elif damage == "garbled meta":
        meta.write_text("{not json")
    else:  # same number of rows, other content: the fingerprint says so
        rows.write_text(rows.read_text().replace("person4", "person9"))
    with caplog.at_level(logging.INFO):
        again = load_index(tree, cache)
    assert again.source == "scanned" and again.rel == first.rel
    damaged = [r for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(damaged) == 1 and damaged[0].levelno == logging.WARNING  # said, not an INFO line among others


def test_index_check_is_validated(tree, tmp_path):
    from facenet_pl.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="data.index_check='always'"):
        load_index(tree, tmp_path / "cache", check="always")


def test_cache_key_from_the_index_equals_the_key_from_stat(tree, tmp_path):
    """Existing caches stay valid: the index's sizes and mtimes give the key a stat of every file gives."""
    index = load_index(tree, tmp_path / "cache")
    paths, _, _, rows = select_files(index)
    assert cache_key(paths, 32, None, stats=(index.sizes[rows], index.mtimes[rows])) == cache_key(paths, 32, None)


# -- the streaming, resumable decode cache ------------------------------------------------------------------------


@pytest.fixture
def many(tmp_path, monkeypatch):
    """40 files (2 unreadable) in chunks of 6: 7 chunks, the last one short."""
    root = write_face_folders(tmp_path / "many", identities=8, per_identity=5)
    paths, _, _ = scan_identity_folders(root)
    paths[7].write_bytes(b"not an image")
    paths[31].write_bytes(b"")
    monkeypatch.setattr(decode_cache, "CHUNK", 6)
    return paths


def _count_decodes(monkeypatch) -> list[str]:
    from facenet_pl.data import images

    seen: list[str] = []
    real = images.load_image
    monkeypatch.setattr(images, "load_image", lambda p, *a, **k: (seen.append(str(p)), real(p, *a, **k))[1])
    return seen


class _Killed(BaseException):
    """Stands for SIGKILL: nothing of the builder runs after it (BaseException: no handler catches it)."""


def _kill_at_sync(monkeypatch, n: int) -> None:
    """The cache build "dies" at its n-th chunk sync (that chunk written, not recorded)."""
    synced = []

    def sync(fd):
        synced.append(fd)
        if len(synced) == n:
            raise _Killed

    monkeypatch.setattr(decode_cache.os, "fdatasync", sync)


def test_a_killed_build_continues_where_it_stopped(many, tmp_path, monkeypatch):
    ref, ref_ok = decode_images(many, 32)
    cache = tmp_path / "cache"
    _kill_at_sync(monkeypatch, 4)  # 3 chunks recorded; the 4th is written but never synced nor recorded
    with pytest.raises(_Killed):
        cached_decode(many, 32, None, cache)
    files = CacheFiles(cache, cache_key(many, 32, None))
    assert not files.meta.exists() and not files.images.exists()  # nothing a later run could trust
    assert files.partial.exists() and len(json.loads(files.progress.read_text())["chunks"]) == 3

    monkeypatch.setattr(decode_cache.os, "fdatasync", lambda fd: None)
    seen = _count_decodes(monkeypatch)
    images, ok = cached_decode(many, 32, None, cache)
    assert len(seen) == 40 - 3 * 6  # only the chunks not recorded were decoded again
    assert np.array_equal(np.asarray(images), ref) and np.array_equal(ok, ref_ok) and ok.sum() == 38
    assert not files.partial.exists() and not files.progress.exists() and files.meta.exists()


def test_a_partial_build_that_fails_its_hash_starts_again(many, tmp_path, monkeypatch):
    ref, _ = decode_images(many, 32)
    cache = tmp_path / "cache"
    _kill_at_sync(monkeypatch, 3)  # 2 chunks recorded
    with pytest.raises(_Killed):
        cached_decode(many, 32, None, cache)
    files = CacheFiles(cache, cache_key(many, 32, None))
    with open(files.partial, "r+b") as f:  # damage a recorded chunk
        f.seek(200)
        f.write(b"\x07" * 64)
    monkeypatch.setattr(decode_cache.os, "fdatasync", lambda fd: None)
    seen = _count_decodes(monkeypatch)
    with pytest.warns(UserWarning, match="cannot be continued"):
        images, _ = cached_decode(many, 32, None, cache)
    assert len(seen) == 40 and np.array_equal(np.asarray(images), ref)


def test_a_full_disk_mid_build_leaves_nothing_and_trains_from_memory(many, tmp_path, monkeypatch):
    import errno

    ref, _ = decode_images(many, 32)
    writes = []
    real = os.pwrite

    def full(fd, data, offset):
        writes.append(offset)
        if len(writes) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(decode_cache.os, "pwrite", full)
    with pytest.warns(UserWarning, match="disk full writing the decoded-image cache"):
        images, ok = cached_decode(many, 32, None, tmp_path / "cache")
    assert np.array_equal(images, ref) and ok.sum() == 38
    assert [f.name for f in (tmp_path / "cache").iterdir() if not f.name.startswith("lock-")] == []


def test_building_a_cache_holds_a_few_chunks_in_memory_not_the_data(tmp_path, monkeypatch):
    """Python-side allocations while building: bounded by the chunk size, not by the number of images (decoding
    all of them into one array first would allocate the whole data set)."""
    root = write_face_folders(tmp_path / "f", identities=30, per_identity=20)  # 600 files
    paths, _, _ = scan_identity_folders(root)
    monkeypatch.setattr(decode_cache, "CHUNK", 32)
    size = 48
    whole = len(paths) * 3 * size * size
    tracemalloc.start()
    try:
        cached_decode(paths, size, None, tmp_path / "cache")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    chunk = 32 * 3 * size * size
    assert peak < whole / 4 and peak < 6 * chunk, (peak, chunk, whole)
    images, ok = cached_decode(paths, size, None, tmp_path / "cache")  # and the result is the decoded data
    assert np.array_equal(np.asarray(images), decode_images(paths, size)[0]) and ok.all()


# -- no cache: training batches decoded from the files by DataLoader workers ------------------------------------


FOLDER = [
    "data=folder",
    "backbone.input_size=32",
    "data.decode_workers=0",
    "data.p=4",
    "data.k=3",
    "data.val_identities=4",
    "data.test_identities=4",
    "data.batches_per_epoch=3",
    "trainer.max_epochs=2",
    "test=false",
    "model.embedding_dim=16",
    "callbacks.progress_bar.refresh_rate=0",
    "+callbacks.record._target_=tests.helpers.RecordBatches",
]


def test_no_cache_trains_on_exactly_the_images_the_cache_holds(tmp_path):
    """data.cache=false with 2 DataLoader workers, through the real Trainer: the same batches (indices) and the
    same losses as the cached run (same images, same weights), and no decoded-image cache on disk."""
    from ..helpers import read_batches, train_in_process

    faces = write_face_folders(tmp_path / "faces", 20, 5)
    runs = {}
    for cache in ("true", "false"):
        rec = tmp_path / f"batches_{cache}.jsonl"
        out = tmp_path / f"run_{cache}"
        train_in_process(
            out,
            *FOLDER,
            f"data.root={faces}",
            f"data.cache_dir={tmp_path / f'cache_{cache}'}",
            f"data.cache={cache}",
            f"data.num_workers={0 if cache == 'true' else 2}",
            f"+callbacks.record.path={rec}",
            "trainer.deterministic=true",
            tiny=False,
        )
        runs[cache] = read_batches(rec)
    assert [r["idx"] for r in runs["false"]] == [r["idx"] for r in runs["true"]] and len(runs["true"]) == 6
    np.testing.assert_allclose([r["loss"] for r in runs["false"]], [r["loss"] for r in runs["true"]], rtol=1e-4)
    assert list((tmp_path / "cache_true").glob("images-*.npy"))
    assert not list((tmp_path / "cache_false").glob("images-*.npy"))  # only the file index was written
    assert list((tmp_path / "cache_false").glob("index-*.csv"))


def test_an_unreadable_file_without_cache_is_replaced_by_another_image_of_that_person(tmp_path, caplog):
    from facenet_pl.data.datasets import FileFaceDataset

    faces = write_face_folders(tmp_path / "faces", 3, 4)
    paths, labels, _ = scan_identity_folders(faces)
    paths[5].write_bytes(b"broken")  # person1's second file
    ds = FileFaceDataset(paths, labels, 32)
    ref, _ = decode_images(paths, 32)
    images, labs, idx = ds.__getitems__([0, 5, 7])
    assert idx.tolist() == [0, 6, 7] and labs.tolist() == [labels[0], labels[5], labels[7]]  # the next of person1
    assert torch.equal(images, torch.from_numpy(ref[[0, 6, 7]]))
    assert "cannot decode" in caplog.text and str(paths[5]) in caplog.text


# -- a cache larger than the network input --------------------------------------------------------------------------


def test_a_larger_cache_keeps_pixels_and_the_model_sees_its_input_size(tmp_path):
    """data.cache_size=48 with a 32 px network: the cache holds 48 px images, training runs, and the model embeds
    a 48 px batch as it embeds the same images brought to 32 px by PIL (an independent resize)."""
    from PIL import Image

    from facenet_pl.inference.embed import load_model

    from ..helpers import train_in_process

    faces = write_face_folders(tmp_path / "faces", 20, 5)
    rec = tmp_path / "b.jsonl"
    train_in_process(
        tmp_path / "run",
        *FOLDER,
        f"data.root={faces}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.cache_size=48",
        f"+callbacks.record.path={rec}",
        tiny=False,
    )
    cache = next((tmp_path / "cache").glob("images-*.npy"))
    big = np.load(cache, mmap_mode="r")
    assert big.shape[1:] == (3, 48, 48)
    model = load_model(tmp_path / "run" / "checkpoints" / "last.ckpt")
    x48 = torch.from_numpy(np.ascontiguousarray(big[:8]))
    x32 = torch.from_numpy(
        np.stack([np.asarray(Image.fromarray(a.transpose(1, 2, 0)).resize((32, 32), Image.BILINEAR)) for a in big[:8]])
    ).permute(0, 3, 1, 2)
    cos = (model.embed(x48, flip=False) * model.embed(x32, flip=False)).sum(1)
    assert cos.min() > 0.97, cos  # same faces, resized two ways: nearly the same embedding


def test_a_cache_smaller_than_the_input_is_refused(tmp_path):
    from facenet_pl.data.folder import FolderDataModule
    from facenet_pl.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="data.cache_size=16 is smaller than the network input"):
        FolderDataModule(root=str(tmp_path), image_size=32, cache_size=16)


# -- JPEG decoding on the training device (data.decode_on=device; on CPU here) ------------------------------------


def _jpeg_faces(root, identities: int, per_identity: int):
    """Rendered faces as JPEG files of varying, non-square sizes (as scraped crops are)."""
    from PIL import Image

    from facenet_pl.data.synthetic import SyntheticFaceConfig, generate_split

    x, y = generate_split(identities, per_identity, seed=5, split="test", cfg=SyntheticFaceConfig(image_size=64))
    rng = np.random.default_rng(0)
    for i, (img, lab) in enumerate(zip(x.numpy(), y.numpy())):
        (root / f"p{lab:03d}").mkdir(parents=True, exist_ok=True)
        w, h = (int(v) for v in rng.integers(48, 96, 2))
        Image.fromarray(img.transpose(1, 2, 0)).resize((w, h)).save(root / f"p{lab:03d}" / f"{i}.jpg", quality=92)
    return root


@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
def test_device_decoding_matches_the_worker_decoding(tmp_path, fit):
    """Reference: PIL in the worker (load_image). torchvision's JPEG decoder and antialiased resize differ from
    PIL's by a few grey levels, never by content."""
    from facenet_pl.data.datasets import FileFaceDataset
    from facenet_pl.data.device_decode import EncodedFaceDataset, decode_on_device

    faces = _jpeg_faces(tmp_path / "faces", 4, 4)
    paths, labels, _ = scan_identity_folders(faces, include="*.jpg")
    from PIL import Image

    png = tmp_path / "p.png"
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(png)  # a PNG among the JPEGs: decoded by the worker
    paths = [*paths, png]
    labels = np.append(labels, labels[-1])
    idx = list(range(len(paths)))
    ref, _, _ = FileFaceDataset(paths, labels, 32, fit=fit).__getitems__(idx)
    encoded, labs, got_idx = EncodedFaceDataset(paths, labels, 32, fit=fit).__getitems__(idx)
    assert sum(t.dim() == 1 for t in encoded) == 16 and encoded[-1].shape == (3, 32, 32)
    out = decode_on_device(encoded, "cpu", 32, fit=fit)
    assert out.shape == ref.shape and out.dtype == torch.uint8 and got_idx.tolist() == idx
    diff = (out.float() - ref.float()).abs()
    assert diff.mean() < 3.0 and torch.equal(out[-1], ref[-1]), diff.mean()


def test_training_with_device_decoding_draws_the_same_batches(tmp_path):
    from ..helpers import read_batches, train_in_process

    faces = _jpeg_faces(tmp_path / "faces", 20, 5)
    losses = {}
    for where in ("worker", "device"):
        rec = tmp_path / f"{where}.jsonl"
        train_in_process(
            tmp_path / where,
            *FOLDER,
            f"data.root={faces}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.cache=false",
            f"data.decode_on={where}",
            "data.num_workers=2",
            f"+callbacks.record.path={rec}",
            tiny=False,
        )
        losses[where] = read_batches(rec)
    assert [r["idx"] for r in losses["device"]] == [r["idx"] for r in losses["worker"]]
    np.testing.assert_allclose([r["loss"] for r in losses["device"]][:1], [r["loss"] for r in losses["worker"]][:1],
                               rtol=0.05)  # fmt: skip


def test_device_decoding_needs_no_cache(tmp_path):
    from facenet_pl.data.folder import FolderDataModule
    from facenet_pl.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="data.decode_on=device .* needs data.cache=false"):
        FolderDataModule(root=str(tmp_path), decode_on="device")
    with pytest.raises(ConfigError, match="data.decode_on='gpu'"):
        FolderDataModule(root=str(tmp_path), cache=False, decode_on="gpu")


def test_cache_list_shows_an_interrupted_build_and_prune_removes_it_unless_it_is_being_built(
    many, tmp_path, monkeypatch, capsys
):
    import fcntl

    from facenet_pl.cli.main import main
    from facenet_pl.data.decode_cache import list_caches

    cache = tmp_path / "cache"
    _kill_at_sync(monkeypatch, 3)  # 2 chunks recorded
    with pytest.raises(_Killed):
        cached_decode(many, 32, None, cache)
    files = CacheFiles(cache, cache_key(many, 32, None))
    [entry] = list_caches(cache)
    assert entry.files.key == files.key and entry.state == "interrupted"
    assert entry.progress["source"] == "2 of 7 chunks decoded" and entry.files.nbytes() > 2 * 6 * 3 * 32 * 32
    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    assert "interrupted" in capsys.readouterr().out

    with open(cache / f"lock-{files.key}", "a+b") as held:  # another process building it now
        fcntl.flock(held, fcntl.LOCK_EX)
        assert list_caches(cache)[0].state == "building"
        assert main(["cache", "prune", "--cache-dir", str(cache), "--yes"]) == 0
        assert files.partial.exists(), "prune removed a build in progress"
        fcntl.flock(held, fcntl.LOCK_UN)
    assert main(["cache", "prune", "--cache-dir", str(cache), "--yes"]) == 0
    assert not files.partial.exists() and not files.progress.exists()


def test_a_truncated_jpeg_is_left_to_the_worker_which_replaces_it(tmp_path):
    """A JPEG cut short (no end marker) is not sent to the device decoder: the worker tries it, fails, and gives
    the next image of the same person, as without device decoding."""
    from facenet_pl.data.device_decode import EncodedFaceDataset

    faces = _jpeg_faces(tmp_path / "faces", 2, 3)
    paths, labels, _ = scan_identity_folders(faces)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    images, labs, idx = EncodedFaceDataset(paths, labels, 32).__getitems__([0, 1, 2])
    assert [t.dim() for t in images] == [1, 3, 1] and idx.tolist() == [0, 2, 2]
    assert labs.tolist() == [labels[0], labels[1], labels[2]]


def _with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0/SOF2) declaring another width and height: a small file that a decoder
    would allocate width x height pixels for."""
    i = 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC2):  # height and width follow the precision byte
            return jpeg[: i + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[i + 9 :]
        i += 2 + length
    raise ValueError("no frame header")


def test_a_jpeg_declaring_too_many_pixels_is_never_decoded_on_the_device(tmp_path):
    """A JPEG whose header declares 20000 x 20000 pixels (PIL's decompression-bomb limit is 2 x 89.5 M): checked
    from the header before anything is decoded, refused like an unreadable file and replaced by the next image of
    the same person, as the worker's PIL path does."""
    from PIL import Image

    from facenet_pl.data.device_decode import EncodedFaceDataset
    from facenet_pl.data.images import load_image

    faces = _jpeg_faces(tmp_path / "faces", 2, 3)
    paths, labels, _ = scan_identity_folders(faces)
    paths[1].write_bytes(_with_declared_size(paths[1].read_bytes(), 20000, 20000))
    with pytest.raises(Image.DecompressionBombError, match="400000000 pixels"):  # a bomb by its header
        Image.open(paths[1])
    assert load_image(paths[1], 32) is None  # the worker's PIL path refuses it
    images, labs, idx = EncodedFaceDataset(paths, labels, 32).__getitems__([0, 1, 2])
    assert [t.dim() for t in images] == [1, 3, 1] and idx.tolist() == [0, 2, 2]
