"""Identity folders with every kind of awkward file: skipped and counted, never a crash."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from facenet_pl.data import FolderDataModule
from facenet_pl.data.decode_cache import cached_decode
from facenet_pl.data.images import decode_images, load_image, scan_identity_folders


def _img(path, mode="RGB", size=(20, 24), ext_format="PNG"):
    rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, size[::-1]).astype(np.uint16))
    else:
        bands = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        arr = rng.integers(0, 255, (*size[::-1], bands)).astype(np.uint8)
        im = Image.fromarray(arr[..., 0] if bands == 1 else arr, mode)
    im.save(path, format=ext_format)


@pytest.fixture()
def messy(tmp_path):
    root = tmp_path / "faces"
    a, b, c = root / "id_a", root / "id_b", root / "id_c"
    for d in (a, b, c):
        d.mkdir(parents=True)
    for i in range(3):
        _img(a / f"{i}.jpg", ext_format="JPEG")
    (a / "empty.jpg").write_bytes(b"")
    good = (a / "0.jpg").read_bytes()
    (a / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (a / "notes.txt").write_text("not an image")
    _img(b / "gray.png", "L")
    _img(b / "rgba.png", "RGBA", size=(31, 17))
    _img(b / "deep.png", "I;16")
    _img(b / "noext", ext_format="PNG")
    _img(c / "x.bmp", ext_format="BMP")
    _img(c / "y.png")
    (c / "sub").mkdir()
    os.symlink(c, c / "sub" / "loop")  # a symlink loop must not hang the scan
    (root / "README").write_text("a stray file at the top level is not an identity")
    return root


def test_scan_and_decode_skip_and_count_bad_files(messy, caplog):
    with caplog.at_level("INFO", logger="facenet_pl"):
        paths, labels, names = scan_identity_folders(messy)
    assert names == ["id_a", "id_b", "id_c"]
    # notes.txt is left out by its suffix (and counted); the symlinked folder is neither followed nor a file
    assert len(paths) == 5 + 4 + 2 and "skipped 1 non-image file(s) (.txt x1)" in caplog.text
    assert not any("loop" in str(p) or "notes" in str(p) for p in paths)
    imgs, ok = decode_images(paths, 16)
    bad = sorted(p.name for p, k in zip(paths, ok) if not k)
    assert bad == ["empty.jpg", "truncated.jpg"]
    assert imgs.shape == (11, 3, 16, 16) and imgs.dtype == np.uint8


def test_every_mode_becomes_8bit_rgb(messy):
    for name in ("gray.png", "rgba.png", "deep.png", "noext"):
        arr = load_image(messy / "id_b" / name, 12)
        assert arr.shape == (3, 12, 12) and arr.dtype == np.uint8 and arr.max() > 0
    crop = load_image(messy / "id_b" / "rgba.png", 8, crop=10)
    assert crop.shape == (3, 8, 8)


def test_cache_round_trip_and_invalidation(messy, tmp_path):
    paths, _, _ = scan_identity_folders(messy)
    a, ok_a = cached_decode(paths, 16, None, tmp_path / "cache")
    b, ok_b = cached_decode(paths, 16, None, tmp_path / "cache")
    assert isinstance(b, np.memmap) and np.array_equal(a, b) and np.array_equal(ok_a, ok_b)
    assert len(list((tmp_path / "cache").glob("images-*.npy"))) == 1
    os.utime(paths[0], ns=(1, 1))  # a changed file gets a new cache entry
    cached_decode(paths, 16, None, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("images-*.npy"))) == 2


def test_folder_datamodule_refuses_before_decoding(messy, monkeypatch):
    """3 identities cannot give 1 val + train: a clear error naming the key, before any image is decoded."""
    import facenet_pl.data.folder as folder

    monkeypatch.setattr(folder, "cached_decode", lambda *a, **k: pytest.fail("decoded before checking"))
    dm = FolderDataModule(
        root=str(messy),
        image_size=16,
        val_identities=1,
        test_identities=0,
        val_folds=2,
        val_pairs_per_fold=1,
        cache_dir=None,
        decode_workers=0,
        p=1,
        k=2,
    )
    with pytest.raises(ValueError, match="data.val_identities: 1 identities are too few"):
        dm.setup("fit")


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        scan_identity_folders(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no identity sub-folder"):
        scan_identity_folders(tmp_path / "empty")


def test_what_auto_became_is_recorded_in_the_checkpoint_and_metrics(tmp_path):
    """data=folder with p, batches_per_epoch and the held-out people on auto: metrics.json and the checkpoint record
    the values the run used, and they are what the recorded training batches show (P people per batch, that
    many batches per epoch, that many training people in all)."""
    import json

    import torch

    from ..helpers import read_batches, train_in_process, write_face_folders

    faces = write_face_folders(tmp_path / "faces", 30, 4)
    rec = tmp_path / "batches.jsonl"
    train_in_process(
        tmp_path / "run",
        "data=folder",
        f"data.root={faces}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.decode_workers=0",
        "data.val_pairs_per_fold=4",
        "data.k=3",
        "trainer.max_epochs=1",
        "test=false",
        "+callbacks.record._target_=tests.helpers.RecordBatches",
        f"+callbacks.record.path={rec}",
        tiny=False,
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    resolved = ckpt["facenet_pl"]["data_resolved"]
    assert {f"data/{k}": v for k, v in resolved.items()} == {k: v for k, v in metrics.items() if k.startswith("data/")}
    assert ckpt["hyper_parameters"] is not None and resolved["k"] == 3
    from hydra.utils import instantiate

    dm = instantiate(ckpt["facenet_pl"]["data"])  # the run's own data config: the same split and training people
    dm.setup("fit")
    rows = read_batches(rec)
    people = [set(dm.train_set.labels[r["idx"]].tolist()) for r in rows]
    assert len(rows) == resolved["batches_per_epoch"] and {len(b) for b in people} == {resolved["p"]}
    assert resolved["train_identities"] == 30 - resolved["val_identities"] - resolved["test_identities"]
