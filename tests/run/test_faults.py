"""Fault injection: each test reproduces a fault (concurrent runs, corrupt or truncated caches, full disks, odd
files, kill leftovers) and asserts what the user gets. One-line errors for bad inputs are in
tests/run/test_user_errors.py; diverging training, NaN losses and collapse in tests/training/test_guards.py."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest
import torch

from facenet_pl.data import decode_cache
from facenet_pl.data.decode_cache import CacheFiles, cache_key, cached_decode, list_caches
from facenet_pl.data.images import decode_images, load_image, scan_identity_folders
from facenet_pl.run.dirs import unique_dir

from ..helpers import ROOT, TINY, run_entry, run_train, write_face_folders

# -- run directories -------------------------------------------------------------------------------------------


def test_unique_dir_never_hands_out_a_taken_name(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run-1").mkdir()
    assert unique_dir(str(tmp_path / "run")) == str(tmp_path / "run-2")
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(unique_dir(str(tmp_path / "same")))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8 and all(Path(g).is_dir() for g in got)


def _train_cmd(*overrides: str, multirun: bool = False) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "train.py"),
        *(["-m"] if multirun else []),
        *TINY,
        "trainer.max_epochs=1",
        *overrides,
    ]


def test_two_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    """The issue's `python train.py loss.margin=0.1 & python train.py loss.margin=0.5 & wait`, with both runs
    forced onto one directory name (as when they start in the same second). First the race itself: 8 processes
    resolve ``${unique_dir:...}`` at one instant (a barrier file) and each gets its own directory. Then two
    train.py runs given the same name each write their own config, checkpoint and metrics."""
    race = tmp_path / "race"
    race.mkdir()
    go = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "from facenet_pl.run.dirs import unique_dir\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.001)\n"
        f"print(unique_dir({str(race / 'same')!r}))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(8)
    ]
    time.sleep(0.5)
    go.touch()
    got = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert got == sorted(str(race / n) for n in ["same", *(f"same-{i}" for i in range(1, 8))])

    for m in (0.1, 0.5):
        out = run_entry(
            *_train_cmd(
                f"loss.margin={m}",
                "hydra.run.dir=${unique_dir:outputs/same}",
                "trainer.limit_train_batches=2",
                "test=false",
            )[1:],
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr[-2000:]
    dirs = sorted((tmp_path / "outputs").iterdir())
    assert [d.name for d in dirs] == ["same", "same-1"]
    margins = set()
    for d in dirs:
        ckpt = torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        margin = ckpt["hyper_parameters"]["loss"]["margin"]
        assert f"margin: {margin}" in (d / ".hydra" / "config.yaml").read_text()  # its config, its checkpoint
        assert json.loads((d / "metrics.json").read_text())["global_step"] == 2
        margins.add(margin)
    assert margins == {0.1, 0.5}


def test_a_multirun_chooses_its_sweep_directory_once(tmp_path):
    """Every job of one sweep lands in the same sweep directory (the resolver's result is shared, like ${now:})."""
    out = run_entry(
        *_train_cmd(
            "loss.margin=0.1,0.3",
            "test=false",
            "trainer.limit_train_batches=1",
            "hydra.sweep.dir=${unique_dir:outputs/sweep}",
            multirun=True,
        )[1:],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["sweep"]
    assert sorted(p.name for p in (tmp_path / "outputs" / "sweep").iterdir() if p.is_dir()) == ["0", "1"]


# -- checkpoint files ------------------------------------------------------------------------------------------


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    from facenet_pl.training.checkpoint_io import AtomicCheckpointIO
    from facenet_pl.utils.errors import ConfigError, user_error_message

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {}, "global_step": 5}, path)

    def full(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ConfigError) as e:
        io.save_checkpoint({"state_dict": {}, "global_step": 6}, path)
    monkeypatch.undo()
    msg = user_error_message(e.value)
    assert "disk full writing checkpoint" in msg and str(tmp_path) in msg and "\n" not in msg
    assert torch.load(path, weights_only=True)["global_step"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_checkpoint_temp_file_left_by_a_kill_is_removed_on_the_next_start(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / "checkpoints" / f".last.ckpt.tmp-{dead}"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / "checkpoints" / f".other.ckpt.tmp-{os.getppid()}"  # a live process's: not touched
    live.write_bytes(b"being written")
    out = run_train(tmp_path, "trainer.max_epochs=1", "trainer.limit_train_batches=1", "test=false")
    assert out.returncode == 0, out.stderr[-2000:]
    assert not stale.exists() and live.exists()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# -- decode cache ----------------------------------------------------------------------------------------------


@pytest.fixture
def faces(tmp_path):
    root = write_face_folders(tmp_path / "faces", identities=6, per_identity=5)
    paths, _, _ = scan_identity_folders(root)
    return root, paths


def _build(paths, cache):
    return cached_decode(paths, 32, None, cache, 0, source="faces")


def _files(paths, cache) -> CacheFiles:
    return CacheFiles(Path(cache), cache_key(paths, 32, None))


def _corrupt(files: CacheFiles, how: str) -> None:
    if how == "flipped image bytes":
        with open(files.images, "r+b") as f:
            f.seek(files.images.stat().st_size - 500)
            f.write(bytes(50))
    elif how == "zeroed ok-mask":
        with open(files.ok, "r+b") as f:
            f.seek(files.ok.stat().st_size - 12)
            f.write(bytes(12))
    elif how == "truncated images":
        os.truncate(files.images, files.images.stat().st_size // 2)
    elif how == "zero-length images":
        os.truncate(files.images, 0)
    elif how == "bad header":
        with open(files.images, "r+b") as f:
            f.write(b"garbage!")
    elif how == "missing meta (interrupted build)":
        files.meta.unlink()
    elif how == "garbled meta":
        files.meta.write_text("{not json")
    elif how.startswith("meta of the wrong type: "):  # valid JSON, not what a meta file holds
        files.meta.write_text(how.split(": ", 1)[1])
    elif how == "meta with chunk_hashes: 5":
        meta = json.loads(files.meta.read_text())
        files.meta.write_text(json.dumps({**meta, "chunk_hashes": 5}))


@pytest.mark.parametrize(
    "how",
    [
        "flipped image bytes",
        "zeroed ok-mask",
        "truncated images",
        "zero-length images",
        "bad header",
        "missing meta (interrupted build)",
        "garbled meta",
        "meta of the wrong type: null",
        "meta of the wrong type: []",
        'meta of the wrong type: "x"',
        "meta with chunk_hashes: 5",
    ],
)
def test_a_damaged_cache_is_rebuilt_not_trusted(faces, tmp_path, how, caplog):
    root, paths = faces
    reference, ref_ok = decode_images(paths, 32)
    _build(paths, tmp_path / "cache")
    files = _files(paths, tmp_path / "cache")
    _corrupt(files, how)
    from facenet_pl.cli.main import main

    assert main(["cache", "list", "--cache-dir", str(tmp_path / "cache")]) == 0  # lists it, never crashes
    state = list_caches(tmp_path / "cache")[0].state
    assert state != "current" or how in ("flipped image bytes", "zeroed ok-mask", "bad header"), state
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match="failed its check"):
        images, ok = _build(paths, tmp_path / "cache")
    assert np.array_equal(np.asarray(images), reference) and np.array_equal(ok, ref_ok)
    images, ok = _build(paths, tmp_path / "cache")  # the rebuilt cache is trusted again, silently
    assert np.array_equal(np.asarray(images), reference)


def test_a_damaged_chunk_anywhere_in_a_large_cache_is_found_at_every_open(faces, tmp_path, monkeypatch):
    """The issue's case: bytes flipped in one middle chunk of a many-chunk cache were accepted in 12 of 30 opens
    when large caches were checked on a sample. Every chunk is now hashed at every size: ten times over, a
    damaged middle chunk is found and the cache rebuilt, and what is returned is always the decoded images."""
    root, paths = faces
    monkeypatch.setattr(decode_cache, "CHUNK", 1)  # 30 chunks: a sample of 18 would miss most single ones
    reference, _ = decode_images(paths, 32)
    _build(paths, tmp_path / "cache")
    files = _files(paths, tmp_path / "cache")
    image_bytes = 3 * 32 * 32
    for victim in (7, 11, 13, 17, 19, 9, 21, 12, 15, 18):
        with open(files.images, "r+b") as f:
            f.seek(files.images.stat().st_size - (len(paths) - victim) * image_bytes + 100)
            f.write(b"\xff" * 64)
        with pytest.warns(UserWarning, match=f"images {victim}-{victim} do not match their hash"):
            images, _ = _build(paths, tmp_path / "cache")
        assert np.array_equal(np.asarray(images), reference)


def test_a_full_disk_while_caching_falls_back_to_memory_and_leaves_nothing(faces, tmp_path, monkeypatch, caplog):
    root, paths = faces
    reference, _ = decode_images(paths, 32)
    real_save = np.save

    def full(f, arr, *a, **k):
        real_save(f, arr[: len(arr) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    with pytest.warns(UserWarning, match="disk full writing the decoded-image cache") as w:
        images, ok = _build(paths, tmp_path / "cache")
    assert str(tmp_path / "cache") in str(w[0].message) and "free" in str(w[0].message)
    assert np.array_equal(images, reference) and ok.all()
    left = [f.name for f in (tmp_path / "cache").iterdir() if not f.name.startswith("lock-")]  # (empty lock file)
    assert left == [], "a partial cache or temp file was left behind"


def test_cache_temp_files_of_dead_processes_are_removed(faces, tmp_path):
    root, paths = faces
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / f".images-0123456789abcdef.npy.tmp-{_dead_pid()}"
    stale.write_bytes(b"x" * 100)
    _build(paths, cache)
    assert not stale.exists()


def test_cache_list_and_prune(faces, tmp_path, capsys, monkeypatch):
    from facenet_pl.cli.main import main

    root, paths = faces
    cache = tmp_path / "cache"
    _build(paths, cache)
    old_key = _files(paths, cache).key
    os.utime(paths[0], ns=(1, 1))  # the tree changed: a new cache, the old one superseded
    decode_cache_meta = _files(paths, cache)
    assert decode_cache_meta.key != old_key
    _build(paths, cache)  # written after the first: the newer
    states = {e.files.key: e.state for e in list_caches(cache)}
    assert states == {old_key: "superseded", decode_cache_meta.key: "current"}
    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    listing = capsys.readouterr().out
    assert old_key in listing and "superseded" in listing and "faces" in listing
    assert main(["cache", "prune", "--cache-dir", str(cache), "--dry-run"]) == 0
    assert CacheFiles(cache, old_key).images.exists()
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # not a terminal: prune must not delete without --yes
    assert main(["cache", "prune", "--cache-dir", str(cache)]) == 2
    assert CacheFiles(cache, old_key).images.exists()
    assert main(["cache", "prune", "--cache-dir", str(cache), "--yes"]) == 0
    assert not any(f.exists() for f in CacheFiles(cache, old_key).all())
    assert all(f.exists() for f in decode_cache_meta.all())


# -- odd files -------------------------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    """A photo stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view) loads upright."""
    from PIL import Image

    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 tall: left half red, right half blue
    stored[:, :20, 0] = 255
    stored[:, 20:, 2] = 255
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    x = load_image(tmp_path / "phone.jpg", 16).astype(int)  # (3, 16, 16); viewed upright: red on top
    top, bottom = x[:, :6], x[:, 10:]
    assert top[0].mean() > 200 and top[2].mean() < 60, "the image was not rotated by its EXIF orientation"
    assert bottom[2].mean() > 200 and bottom[0].mean() < 60


def test_broken_symlinks_and_symlink_loops_are_skipped_and_counted(faces, tmp_path):
    root, _ = faces
    person = sorted(p for p in root.iterdir())[0]
    (person / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (person / "loop.png").symlink_to(person / "loop.png")
    paths, labels, _ = scan_identity_folders(root)
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        from facenet_pl.data.folder import FolderDataModule

        dm = FolderDataModule(
            str(root),
            image_size=32,
            val_identities=0,
            test_identities=0,
            val_folds=2,
            cache_dir=str(tmp_path / "cache"),
            decode_workers=0,
            p=2,
            k=2,
        )
        dm.setup("fit")
    assert len(dm.train_set) == 30


@pytest.mark.parametrize("content", ["null", "[]", '"x"', '{"version": 2, "chunks": 5}'])
def test_a_progress_file_of_the_wrong_type_restarts_the_build(faces, tmp_path, content):
    """An interrupted build whose progress file is valid JSON of the wrong shape: started again, not a traceback."""
    root, paths = faces
    reference, _ = decode_images(paths, 32)
    _build(paths, tmp_path / "cache")
    files = _files(paths, tmp_path / "cache")
    files.meta.unlink()  # as if the build had been killed before it finished
    files.images.rename(files.partial)
    files.progress.write_text(content)
    assert [e.state for e in list_caches(tmp_path / "cache")] == ["interrupted"]
    with pytest.warns(UserWarning, match="cannot be continued"):
        images, _ = _build(paths, tmp_path / "cache")
    assert np.array_equal(np.asarray(images), reference)


@pytest.mark.parametrize("bad", [[10**6], [-5]])
def test_a_progress_file_naming_an_image_out_of_range_restarts_the_build(faces, tmp_path, bad):
    """A progress file of the right shape and a chunk whose hash matches, but whose list of unreadable images
    names one outside the chunk: it is damaged (the build starts again, with a warning), not an IndexError on
    every rerun."""
    import json

    from facenet_pl.data.decode_cache import CACHE_VERSION, _chunk_hashes

    root, paths = faces
    reference, _ = decode_images(paths, 32)
    _build(paths, tmp_path / "cache")
    files = _files(paths, tmp_path / "cache")
    images = np.load(files.images, mmap_mode="r")
    chunk = {"hash": _chunk_hashes(images, [0])[0], "bad": bad, "order": 0}
    del images
    files.meta.unlink()  # as if the build had been killed after its first chunk
    files.images.rename(files.partial)
    files.progress.write_text(
        json.dumps({"version": CACHE_VERSION, "n": len(paths), "size": 32, "chunks": {"0": chunk}})
    )
    with pytest.warns(UserWarning, match="cannot be continued"):
        images, ok = _build(paths, tmp_path / "cache")
    assert np.array_equal(np.asarray(images), reference) and ok.all()


@pytest.mark.parametrize("content", ["null", "[]", '"x"', '{"version": 1, "dirs": 5}'])
def test_an_index_meta_of_the_wrong_type_is_rescanned(faces, tmp_path, content, caplog):
    from facenet_pl.data.file_index import _index_files, load_index

    root, _ = faces
    first = load_index(root, tmp_path / "cache")
    _, meta = _index_files(tmp_path / "cache", root)
    meta.write_text(content)
    with caplog.at_level(logging.WARNING):
        again = load_index(root, tmp_path / "cache")
    assert again.source == "scanned" and again.rel == first.rel
    assert "is damaged" in caplog.text


def test_special_files_are_skipped_and_counted_not_waited_on(faces, tmp_path, caplog):
    """A named pipe in an identity folder: opening it would block forever; it is left out of the scan, counted,
    and the cache builds."""
    root, paths = faces
    person = sorted(p for p in root.iterdir())[0]
    os.mkfifo(person / "pipe.png")
    with caplog.at_level(logging.WARNING):
        found, _, _ = scan_identity_folders(root)
    assert "skipped 1 special file(s)" in caplog.text and not any("pipe" in str(p) for p in found)
    assert len(found) == len(paths)
    images, ok = _build(found, tmp_path / "cache")
    assert ok.all()


def test_a_truncated_cache_is_listed_as_damaged(faces, tmp_path):
    root, paths = faces
    _build(paths, tmp_path / "cache")
    files = _files(paths, tmp_path / "cache")
    os.truncate(files.images, files.images.stat().st_size - 3 * 32 * 32)  # one image short
    assert [e.state for e in list_caches(tmp_path / "cache")] == ["damaged"]


# -- read-only outputs ---------------------------------------------------------------------------------------------


def test_read_only_outputs_are_one_line(tmp_path):
    """train.py and eval.py into a read-only run folder, and the CLI's outputs into one: exit non-zero with one
    line naming the folder, never a traceback."""
    from ..helpers import read_only_folder, run_cli

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    from ..helpers import train_in_process

    train_in_process(tmp_path / "run", "trainer.max_epochs=1", "test=false")
    faces = write_face_folders(tmp_path / "faces", 4, 2)
    with read_only_folder(tmp_path / "ro") as ro:
        for script, args in (("train.py", TINY), ("eval.py", [f"ckpt_path={ckpt}"])):
            r = run_entry(script, *args, f"hydra.run.dir={ro / 'run'}")
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            assert r.returncode == 1 and len(lines) == 1 and "cannot write the run directory" in lines[0], r.stderr
            assert "Traceback" not in r.stderr + r.stdout
        for args in (
            ("embed", ckpt, faces, "-o", ro / "e.npy"),
            ("export", ckpt, "-o", ro / "m.safetensors"),
            ("calibrate", ckpt, faces, "-o", ro / "c.ckpt", "--pairs-per-fold", "2"),
            ("cluster", ckpt, faces, "-o", ro / "clusters"),
        ):
            r = run_cli(*args)
            assert r.returncode == 2 and "Traceback" not in r.stderr, (args[0], r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1 and "cannot write" in r.stderr, (args[0], r.stderr)


def test_a_read_only_cache_dir_without_a_cache_decodes_into_memory(faces, tmp_path):
    from ..helpers import read_only_folder

    root, paths = faces
    reference, _ = decode_images(paths, 32)
    with read_only_folder(tmp_path / "ro") as ro:
        with pytest.warns(UserWarning, match="is not writable"):
            images, ok = _build(paths, ro)
    assert np.array_equal(np.asarray(images), reference) and ok.all()


def test_a_full_filesystem_while_checkpointing_is_one_line_through_train_py(tmp_path):
    """A real full filesystem (a 3 MB tmpfs as the run folder; a checkpoint of the default model is larger): torch's
    writer fails with "unexpected pos"; train.py says disk full, names the folder, exits 1, no traceback, and
    leaves no temp file behind."""
    from ..helpers import small_filesystem

    with small_filesystem(tmp_path / "small", "3m") as small:
        r = run_entry("train.py", *TINY, "trainer.max_epochs=1", f"hydra.run.dir={small / 'run'}")
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 1 and len(lines) == 1 and "disk full writing checkpoint" in lines[0], r.stderr[-3000:]
        assert "Traceback" not in r.stderr + r.stdout
        assert not any(".tmp-" in p.name for p in (small / "run").rglob("*"))


def test_a_full_disk_in_the_test_phase_is_one_line_and_keeps_the_training_metrics(tmp_path, monkeypatch):
    """The test phase fails to write (ENOSPC injected where the test phase writes its plots and the final
    metrics): train.py exits with one line naming the file and the free space, and metrics.json holds what
    training measured."""
    import facenet_pl.run.fit as training

    real = training._write_metrics
    calls = []

    def full_after_first(out_dir, metrics):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(out_dir / "metrics.json"))
        real(out_dir, metrics)

    def no_room(fig, *a, **k):  # as a real write() fails: ENOSPC with no file name
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(training, "_write_metrics", full_after_first)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", no_room)
    r = run_entry("train.py", *TINY, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    run = tmp_path / "run"
    assert r.returncode == 1 and len(lines) == 1 and f"disk full writing {run / 'metrics.json'} (" in lines[0], r.stderr
    assert f"free in {run})" in lines[0]  # the free space of the file's own folder
    # the skipped plot: the file the user will look for, not the temp it was written through, nor only the folder
    warned = [ln for ln in (run / "train.log").read_text().splitlines() if "plots skipped" in ln]
    assert len(warned) == 1
    assert re.search(rf"could not write {run}/\w+\.png \(No space left on device, .* free", warned[0])
    kept = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert kept["epochs"] == 1 and "best/val/acc" in kept and "test/acc" not in kept


def test_a_plot_that_fills_a_real_disk_names_its_file_and_that_disk(tmp_path):
    """A real full filesystem (a 1 MB tmpfs, filled): the ROC plot's write fails inside matplotlib with an ENOSPC
    that names no file; the one line names roc.png (not its temp) and the free space of the tmpfs, not of '.'."""
    from facenet_pl.evaluation.plots import save_roc
    from facenet_pl.utils.errors import user_error_message

    from ..helpers import small_filesystem

    with small_filesystem(tmp_path / "small", "1m") as small:
        filler = small / "filler"
        with open(filler, "wb") as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
        rng = np.random.default_rng(0)
        with pytest.raises(OSError) as err:
            save_roc(rng.random(200), np.arange(200) % 2 == 0, small / "run" / "roc.png")
        msg = user_error_message(err.value)
        assert msg.startswith(f"disk full writing {small / 'run' / 'roc.png'} (") and f"in {small / 'run'})" in msg
        assert re.search(r"\((0|\d+) MB free in ", msg)  # the tmpfs's free space (none), not the working disk's GBs
        assert not [p.name for p in (small / "run").iterdir()]  # its temp removed


@pytest.mark.parametrize("content", ["null", "{not json", "[1, 2]"])
def test_a_cache_meta_file_that_is_not_a_description_is_listed_as_damaged(faces, tmp_path, content):
    """`null` (or no JSON at all) where the meta file should describe the cache: damaged, which prune removes; not
    'incomplete', which reads as a build still to finish."""
    root, paths = faces
    _build(paths, tmp_path / "cache")
    _files(paths, tmp_path / "cache").meta.write_text(content)
    assert [e.state for e in list_caches(tmp_path / "cache")] == ["damaged"]
