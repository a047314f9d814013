"""The facenet-pl console commands on a tiny model trained once for this module.

Commands run in-process through ``facenet_pl.cli.main.main`` (what the ``facenet-pl`` script calls); one test
runs the real console entry point in a subprocess."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from facenet_pl.inference.embed import load_model

from ..helpers import run_cli as cli
from ..helpers import train_in_process, write_face_folders


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train_in_process(run, "trainer.max_epochs=2")
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return write_face_folders(tmp_path_factory.mktemp("faces"), 4, 3)


def test_checkpoint_carries_a_calibrated_threshold(trained):
    assert np.isfinite(float(load_model(trained).threshold))


def test_embed_writes_npy_and_names_matching_the_model(trained, faces, tmp_path):
    out = cli("embed", trained, faces, "-o", tmp_path / "e.npy", "--no-flip")
    assert out.returncode == 0, out.stderr
    emb = np.load(tmp_path / "e.npy")
    names = (tmp_path / "e.files.txt").read_text().split()
    assert emb.shape == (12, 128) and len(names) == 12
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    model = load_model(trained)
    x = torch.from_numpy(np.asarray(Image.open(names[0]).convert("RGB"))).permute(2, 0, 1)[None]
    np.testing.assert_allclose(model.embed(x).numpy()[0], emb[0], atol=1e-5)
    again = cli("embed", trained, faces, "-o", tmp_path / "e.npy")
    assert again.returncode == 2 and "not overwriting" in again.stderr


def test_embed_skips_non_images_and_takes_include_exclude(trained, faces, tmp_path):
    """An aligned folder holds align_report.json; a data set ships notes: neither is embedded, both are counted.
    --include / --exclude choose files by their path relative to the folder."""
    import shutil

    folder = tmp_path / "aligned"
    shutil.copytree(faces, folder)
    (folder / "align_report.json").write_text("{}")
    (folder / "person0" / "README.txt").write_text("notes")
    out = cli("embed", trained, folder, "-o", tmp_path / "all.npy")
    assert out.returncode == 0 and "skipped 2 non-image file(s)" in out.stderr, out.stderr
    assert np.load(tmp_path / "all.npy").shape[0] == 12
    out = cli(
        "embed",
        trained,
        folder,
        "-o",
        tmp_path / "some.npy",
        "--include",
        "person0/*",
        "person1/*",
        "--exclude",
        "*/0.png",
    )
    assert out.returncode == 0 and "left out 7 file(s) by --include/--exclude" in out.stderr, out.stderr
    names = (tmp_path / "some.files.txt").read_text().split()
    expected = sorted(str(p) for d in ("person0", "person1") for p in (folder / d).glob("*.png") if p.name != "0.png")
    assert sorted(names) == expected and len(names) == 5


def test_embed_keeps_names_and_rows_aligned_and_counts_broken_links(trained, faces, tmp_path):
    """A name with a line break would shift every later line of .files.txt against the rows: it is skipped and
    counted; broken and looping links are counted too. Every listed name is the file its row embeds."""
    import shutil

    folder = tmp_path / "odd"
    shutil.copytree(faces, folder)
    src = next((folder / "person1").iterdir())
    shutil.copy(src, folder / "person1" / "two\nlines.png")
    (folder / "person2" / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "person2" / "loop.png").symlink_to(folder / "person2" / "loop.png")
    out = cli("embed", trained, folder, "-o", tmp_path / "e.npy", "--no-flip")
    assert out.returncode == 0, out.stderr
    assert "skipped 1 file(s) with a line break" in out.stderr and "skipped 2 broken or looping link(s)" in out.stderr
    emb = np.load(tmp_path / "e.npy")
    names = (tmp_path / "e.files.txt").read_text().splitlines()
    assert len(names) == len(emb) == 12
    model = load_model(trained)
    for i in (0, len(names) - 1):
        x = torch.from_numpy(np.asarray(Image.open(names[i]).convert("RGB"))).permute(2, 0, 1)[None]
        np.testing.assert_allclose(model.embed(x).numpy()[0], emb[i], atol=1e-5)


def test_embed_follows_links_to_identity_folders_and_counts_a_loop_once(trained, faces, tmp_path):
    """Identity folders that are links to folders elsewhere (as training reads them): every image is embedded, under
    its linked path; a link back to the top folder is a loop, counted once, never walked again."""
    linked = tmp_path / "linked"
    linked.mkdir()
    for person in sorted(faces.iterdir()):
        (linked / person.name).symlink_to(person, target_is_directory=True)
    (linked / "again").symlink_to(linked, target_is_directory=True)  # a loop
    out = cli("embed", trained, linked, "-o", tmp_path / "e.npy", "--no-flip")
    assert out.returncode == 0, out.stderr
    names = (tmp_path / "e.files.txt").read_text().splitlines()
    expected = sorted(str(linked / f.relative_to(faces)) for f in faces.rglob("*") if f.is_file())
    assert names == expected and len(np.load(tmp_path / "e.npy")) == len(expected) == 12
    assert "skipped 1 broken or looping link(s)" in out.stderr and "no image files" not in out.stderr


def test_verify_uses_the_checkpoint_threshold(trained, faces):
    a, b = sorted((faces / "person0").iterdir())[:2]
    out = cli("verify", trained, a, b)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["threshold"] == pytest.approx(float(load_model(trained).threshold), abs=1e-6)
    assert res["same"] == (res["distance"] < res["threshold"])
    forced = json.loads(cli("verify", trained, a, b, "--threshold", "0").stdout)
    assert forced["same"] is False


def test_cluster_writes_csv_and_contact_sheets(trained, faces, tmp_path):
    out = cli("cluster", trained, faces, "-o", tmp_path / "c", "--n-clusters", "4")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(open(tmp_path / "c" / "clusters.csv")))
    assert len(rows) == 12 and {r["cluster"] for r in rows} == {"0", "1", "2", "3"}
    assert len(list((tmp_path / "c").glob("cluster_*.png"))) == 4


@pytest.mark.parametrize("name", ["model.onnx", "model.pt"])
def test_export_matches_pytorch_within_1e4(trained, tmp_path, name):
    out = cli("export", trained, "-o", tmp_path / name)
    assert out.returncode == 0, out.stderr
    model = load_model(trained)
    x = torch.randn(3, 3, model.input_size, model.input_size)
    with torch.no_grad():
        ref = model.net(x).numpy()
    if name.endswith(".onnx"):
        import onnx
        import onnxruntime as ort

        got = ort.InferenceSession(str(tmp_path / name)).run(None, {"images": x.numpy()})[0]
        meta = {p.key: p.value for p in onnx.load(str(tmp_path / name)).metadata_props}
    else:
        extra = {"facenet_pl.json": ""}
        with torch.no_grad():
            got = torch.jit.load(str(tmp_path / name), _extra_files=extra)(x).numpy()
        meta = json.loads(extra["facenet_pl.json"])
    assert np.abs(got - ref).max() < 1e-4
    # The file says what its input and output are (a runtime has no checkpoint to ask).
    size = model.input_size
    assert meta["facenet_pl.input"] == f"float32 [batch, 3, {size}, {size}], RGB, NCHW"
    assert meta["facenet_pl.normalization"].startswith("fixed: (x - 127.5) / 128")
    assert meta["facenet_pl.output"] == "float32 [batch, 128], L2-normalised embeddings"
    assert float(meta["facenet_pl.threshold"]) == pytest.approx(float(model.threshold), rel=1e-5)
    assert meta["facenet_pl.calibrated_on"] == model.calibration["on"]
    assert f"threshold: {meta['facenet_pl.threshold']}" in out.stdout


def test_plot_writes_a_png(trained, faces, tmp_path):
    out = cli("plot", trained, faces, "-o", tmp_path / "tsne.png")
    assert out.returncode == 0, out.stderr
    assert Image.open(tmp_path / "tsne.png").size[0] > 300


def test_errors_are_one_line(tmp_path, trained):
    # The console entry point in its own interpreter (a command that needs no model: no torch import, 0.2 s):
    # exit status 2 and one line, no traceback.
    out = subprocess.run(
        [sys.executable, "-m", "facenet_pl.cli.main", "align", str(tmp_path / "nowhere"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "is not a folder of images" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    # a fresh clone has no cache folder yet: that is no error
    out = cli("cache", "list", "--cache-dir", tmp_path / "nowhere")
    assert out.returncode == 0 and "no caches" in out.stdout, out.stderr
    out = cli("verify", tmp_path / "missing.ckpt", "a.png", "b.png")
    assert out.returncode == 2 and "model file not found" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    out = cli("embed", bad, tmp_path, "-o", tmp_path / "x.npy")
    assert out.returncode == 2 and "Traceback" not in out.stderr


@pytest.mark.parametrize("name", ["model.onnx", "model.pt", "model.safetensors", "cal.ckpt"])
def test_a_killed_export_or_calibrate_leaves_no_output_and_a_rerun_works(trained, faces, tmp_path, name):
    """kill -9 after the file is written, before it is renamed (a fork of this process SIGKILLs itself): nothing
    under the final name, so a rerun is not refused ('exists'), succeeds, and removes the dead process's temp."""
    import os
    import signal

    from ..helpers import in_fork

    out = tmp_path / name
    args = (
        ("calibrate", trained, faces, "-o", out, "--pairs-per-fold", "2")
        if name.endswith(".ckpt")
        else ("export", trained, "-o", out)
    )

    def killed_while_writing():
        # SIGKILL once the file is written, just before it would be renamed (torch's and safetensors' writers do
        # not go through Python's open(), so the kill is put in the one call every output makes before its rename)
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        cli(*args)

    code, _ = in_fork(killed_while_writing, what="the killed export")
    assert code == -signal.SIGKILL
    assert not out.exists()
    assert any(".tmp-" in p.name for p in tmp_path.iterdir())  # what the kill left
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert out.exists() and not any(".tmp-" in p.name for p in tmp_path.iterdir())


def test_plot_tells_40_identities_apart(trained, tmp_path, monkeypatch):
    """t-SNE of 40 people: 40 different colour x marker pairs (the 20-colour palette alone repeated colours)."""
    import matplotlib.axes

    faces = write_face_folders(tmp_path / "faces40", 40, 2)
    seen, scatter = set(), matplotlib.axes.Axes.scatter

    def record(self, *args, **kwargs):
        seen.add((tuple(np.round(kwargs.get("color", (0, 0, 0)), 4)), kwargs.get("marker")))
        return scatter(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", record)
    out = cli("plot", trained, faces, "-o", tmp_path / "tsne.png")
    assert out.returncode == 0, out.stderr
    assert len(seen) == 40


def test_a_model_of_the_built_in_faces_says_so_on_photos(trained, faces, tmp_path):
    """verify / embed / cluster with a model trained only on the synthetic faces: one warning line; a model trained on
    a folder: none."""
    a, b = sorted(faces.rglob("*.png"))[:2]
    out = cli("verify", trained, a, b)
    assert out.returncode == 0 and "trained on the built-in synthetic faces only" in out.stderr
    folder_run = tmp_path / "folder_run"
    train_in_process(
        folder_run,
        "data=folder",
        f"data.root={write_face_folders(tmp_path / 'people', 30, 4)}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.decode_workers=0",
        "data.k=3",
        "data.val_pairs_per_fold=4",
        "trainer.max_epochs=1",
        "test=false",
        tiny=False,
    )
    out = cli("verify", folder_run / "checkpoints" / "last.ckpt", a, b)
    assert out.returncode == 0 and "synthetic" not in out.stderr, out.stderr


def test_eval_and_init_from_also_say_a_model_saw_only_synthetic_faces(trained, faces, tmp_path, caplog):
    """eval.py of the synthetic-only model on a folder of photos, and a run started from it with model.init_from:
    the same warning, pointing at a trained face model; eval.py on its own synthetic test people: none."""
    import logging

    from ..helpers import eval_in_process

    with caplog.at_level(logging.WARNING):
        eval_in_process(trained, tmp_path / "eval", "data=folder", f"data.root={faces}", "split=all",
                        "knn=false", "clustering=false")  # fmt: skip
    said = [r.getMessage() for r in caplog.records if "synthetic faces only" in r.getMessage()]
    assert len(said) == 1 and "import-weights" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        eval_in_process(trained, tmp_path / "eval_own", "knn=false", "clustering=false")
    assert "synthetic faces only" not in caplog.text
    with caplog.at_level(logging.WARNING):
        train_in_process(tmp_path / "ft", f"model.init_from={trained}", "trainer.max_epochs=1", "test=false")
    assert "model.init_from" in caplog.text and "synthetic faces only" in caplog.text
