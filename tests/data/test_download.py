"""The LFW download command against a local file:// mirror that the test builds."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from ..lfw_fixture import make_mini_lfw

ROOT = Path(__file__).resolve().parents[2]


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


@pytest.fixture()
def mirror(tmp_path):
    src = make_mini_lfw(tmp_path / "src")
    m = tmp_path / "mirror"
    m.mkdir()
    with tarfile.open(m / "lfw-deepfunneled.tgz", "w:gz") as tar:
        tar.add(src / "lfw-deepfunneled", arcname="lfw-deepfunneled")
    sums = {"lfw-deepfunneled.tgz": _md5(m / "lfw-deepfunneled.tgz")}
    for name in [
        "pairs.txt",
        "people.txt",
        "pairsDevTrain.txt",
        "pairsDevTest.txt",
        "peopleDevTrain.txt",
        "peopleDevTest.txt",
    ]:
        (m / name).write_bytes(
            (src / "pairs.txt").read_bytes() if name.startswith("pairs") else (src / "people.txt").read_bytes()
        )
        sums[name] = _md5(m / name)
    (tmp_path / "sums.json").write_text(json.dumps(sums))
    return m, tmp_path / "sums.json", src


def _subprocess(*args):
    """The real command line: ``python -m facenet_pl.data.download lfw ARGS``."""
    return subprocess.run(
        [sys.executable, "-m", "facenet_pl.data.download", "lfw", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _run(*args):
    """The same command's ``main`` in this process (no interpreter start-up): returncode, stdout, stderr."""
    from facenet_pl.data.download import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["lfw", *map(str, args)])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_download_from_file_mirror_verifies_and_extracts(mirror, tmp_path):
    m, sums, _ = mirror
    out = _subprocess("--root", tmp_path / "lfw", "--base-url", m.as_uri(), "--checksums", sums)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "lfw" / "lfw-deepfunneled" / "Alice_Able" / "Alice_Able_0003.jpg").is_file()
    assert (tmp_path / "lfw" / "pairs.txt").is_file()
    again = _run("--root", tmp_path / "lfw", "--base-url", m.as_uri(), "--checksums", sums)
    assert again.returncode == 0 and "cached" in again.stdout


def test_checksum_mismatch_fails_and_removes_the_file(mirror, tmp_path):
    m, sums, _ = mirror
    bad = json.loads(sums.read_text())
    bad["lfw-deepfunneled.tgz"] = "0" * 32
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    out = _run("--root", tmp_path / "lfw", "--base-url", m.as_uri(), "--checksums", tmp_path / "bad.json")
    assert out.returncode == 1 and "MD5" in out.stderr
    assert not (tmp_path / "lfw" / "lfw-deepfunneled.tgz").exists()
    assert not (tmp_path / "lfw" / "lfw-deepfunneled").exists()


def test_builtin_official_checksums_reject_a_fake_archive(mirror, tmp_path):
    m, _, _ = mirror
    out = _run("--root", tmp_path / "lfw", "--base-url", m.as_uri())
    assert out.returncode == 1 and "68331da3eb755a505a502b5aacb3c201" in out.stderr


def test_unreachable_mirror_is_a_clear_error(tmp_path):
    out = _run("--root", tmp_path / "lfw", "--base-url", (tmp_path / "nowhere").as_uri())
    assert out.returncode == 1 and "could not download" in out.stderr


def test_import_an_extracted_local_copy(mirror, tmp_path):
    m, sums, src = mirror
    out = _run("--root", tmp_path / "lfw", "--from", src, "--checksums", sums)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "lfw" / "lfw-deepfunneled").is_symlink()
    assert (tmp_path / "lfw" / "pairs.txt").read_text() == (src / "pairs.txt").read_text()
