"""Opening a model file never runs code; safetensors sharing; archive extraction refuses unsafe members."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from facenet_pl.cli.main import main as cli
from facenet_pl.data.download import _safe_extract
from facenet_pl.inference.embed import embed_images, load_model
from facenet_pl.utils.errors import ConfigError

from ..helpers import TINY, eval_in_process, train_in_process, write_face_folders


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    train_in_process(run, "trainer.max_epochs=1")
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    return write_face_folders(tmp_path_factory.mktemp("faces"), 3, 2)


def _tampered(ckpt: Path, out: Path, edit) -> Path:
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    edit(data)
    torch.save(data, out)
    return out


def _commands(model: Path, faces: Path, out: Path) -> dict[str, list[str]]:
    img = sorted(faces.rglob("*.png"))
    return {
        "embed": ["embed", str(model), str(faces), "-o", str(out / "e.npy")],
        "verify": ["verify", str(model), str(img[0]), str(img[1])],
        "cluster": ["cluster", str(model), str(faces), "-o", str(out / "clusters")],
        "plot": ["plot", str(model), str(faces), "-o", str(out / "tsne.png")],
        "export": ["export", str(model), "-o", str(out / "m.safetensors")],
    }


def test_a_pickle_that_runs_code_is_refused_by_every_command(ckpt, faces, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _tampered(ckpt, tmp_path / "evil.ckpt", lambda d: d.update(extra=_RunsCode(marker)))
    with pytest.raises(pickle.UnpicklingError):  # the file really is a code-running pickle
        torch.load(evil, weights_only=True)
    out = tmp_path / "out"
    out.mkdir()
    for name, argv in _commands(evil, faces, out).items():
        assert cli(argv) == 2, name
        err = capsys.readouterr().err
        assert "would run code" in err and "Traceback" not in err, (name, err)
    with pytest.raises(ConfigError, match="would run code"):
        eval_in_process(evil, out / "eval")
    # resuming training from it (train.py ckpt_path=...) refuses too, before any training
    with pytest.raises(ConfigError, match="would run code"):
        train_in_process(tmp_path / "resume", f"ckpt_path={evil}", "trainer.max_epochs=2")
    assert not marker.exists(), "the checkpoint's code ran"
    assert list(out.iterdir()) == [], "a command wrote output for a refused model"


@pytest.mark.parametrize(
    "part,entry,key",
    [
        ("miner", {"_target_": "os.system", "_args_": ["touch {marker}"]}, "hyper_parameters.miner._target_"),
        (
            "loss",
            {
                "_target_": "facenet_pl.losses.TripletLoss",
                "margin": {"_target_": "subprocess.call", "args": ["touch", "{marker}"]},
            },
            "hyper_parameters.loss.margin._target_",
        ),
        (
            "backbone",
            {"name": "facenet_small", "input_size": 64, "kwargs": {"checkpoint_path": "{marker}"}},
            "hyper_parameters.backbone.kwargs.checkpoint_path",
        ),
    ],
)
def test_hyperparameters_naming_other_code_are_refused(ckpt, tmp_path, part, entry, key):
    marker = tmp_path / "pwned"
    entry = eval(repr(entry).replace("{marker}", str(marker)))  # noqa: S307 - a literal built above

    def edit(d):
        d["hyper_parameters"][part] = entry

    bad = _tampered(ckpt, tmp_path / "bad.ckpt", edit)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_model(bad)
    assert not marker.exists()


def test_a_data_config_naming_other_code_is_refused(ckpt, tmp_path):
    """eval.py instantiates the data config a checkpoint carries: it may only name facenet_pl classes."""
    marker = tmp_path / "pwned"

    def edit(d):
        d["facenet_pl"]["data"] = {"_target_": "os.system", "_args_": [f"touch {marker}"]}

    bad = _tampered(ckpt, tmp_path / "bad.ckpt", edit)
    with pytest.raises(ConfigError, match=r"facenet_pl\.data\._target_"):
        eval_in_process(bad, tmp_path / "eval")
    assert not marker.exists()


def test_safetensors_round_trip_and_every_command_accepts_it(ckpt, faces, tmp_path, capsys):
    st = tmp_path / "model.safetensors"
    assert cli(["export", str(ckpt), "-o", str(st)]) == 0
    assert "max |embedding difference|" in capsys.readouterr().out
    assert st.read_bytes()[8:9] == b"{"  # a JSON header and raw tensors: nothing to unpickle
    plain = tmp_path / "plain"
    plain.write_bytes(b"")  # the mode any other output gets here (umask), not safetensors' mkstemp 0600
    assert st.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "plain"]  # no temp file left
    a, b = load_model(ckpt), load_model(st)
    x = torch.randint(0, 256, (6, 3, a.input_size, a.input_size), dtype=torch.uint8)
    ea, eb = embed_images(a, x, flip=True), embed_images(b, x, flip=True)
    assert (ea - eb).abs().max().item() <= 1e-6
    assert float(b.threshold) == float(a.threshold) and np.isfinite(float(b.threshold))
    assert (b.input_size, b.normalization, b.crop_size) == (a.input_size, a.normalization, a.crop_size)
    # every command that takes a checkpoint takes the safetensors file, with the same result
    img = sorted(faces.rglob("*.png"))
    outs = {}
    for model in (ckpt, st):
        assert cli(["verify", str(model), str(img[0]), str(img[2])]) == 0
        outs[model.suffix] = capsys.readouterr().out
    assert outs[".ckpt"] == outs[".safetensors"]
    out = tmp_path / "o"
    out.mkdir()
    for name, argv in _commands(st, faces, out).items():
        if name != "export":
            assert cli(argv) == 0, name
    with pytest.raises(ConfigError, match="carries no training data config"):  # shared weights: choose the data
        eval_in_process(st, out / "eval")
    res = eval_in_process(st, out / "eval", "data=synthetic", *(o for o in TINY if o.startswith("data.")))
    own = eval_in_process(ckpt, out / "eval_ckpt")  # the run's own test split: at its validation threshold
    assert res["accuracy"] == pytest.approx(own["accuracy_other_folds_threshold"])  # the same pairs, k-fold both
    assert res["acc_at_model_threshold"] == pytest.approx(own["accuracy"])  # the same stored threshold


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize(
    "member,reason",
    [
        (_file("../outside.txt"), "'..'"),
        (_file("lfw/../../outside.txt"), "'..'"),
        (_file("/tmp/facenet_pl_abs_test.txt"), "absolute"),
        (_link("lfw/evil", "/etc/passwd"), "link"),
        (_link("lfw/inside", "lfw/a.txt"), "link"),
        (_link("lfw/hard", "/etc/passwd", tarfile.LNKTYPE), "link"),
    ],
)
def test_unsafe_archive_members_are_refused_and_nothing_is_extracted(tmp_path, member, reason):
    root = tmp_path / "data" / "lfw"
    root.mkdir(parents=True)
    archive = _tar(tmp_path / "a.tgz", [_file("lfw/a.txt"), member])
    with pytest.raises(RuntimeError, match=f"refusing unsafe member.*{reason}"):
        _safe_extract(archive, root)
    assert list(root.iterdir()) == []
    assert not (tmp_path / "data" / "outside.txt").exists() and not (tmp_path / "outside.txt").exists()
    assert not Path("/tmp/facenet_pl_abs_test.txt").exists()


def test_a_sibling_folder_sharing_the_roots_name_prefix_is_outside(tmp_path):
    root = tmp_path / "lfw"
    root.mkdir()
    archive = _tar(tmp_path / "a.tgz", [_file("../lfw-evil/x.txt")])  # the old prefix check accepted this
    with pytest.raises(RuntimeError, match="refusing unsafe member"):
        _safe_extract(archive, root)
    assert not (tmp_path / "lfw-evil").exists()


def test_a_safe_archive_extracts(tmp_path):
    root = tmp_path / "lfw"
    root.mkdir()
    _safe_extract(_tar(tmp_path / "a.tgz", [_file("lfw-deepfunneled/A/A_0001.jpg", b"jpeg")]), root)
    assert (root / "lfw-deepfunneled" / "A" / "A_0001.jpg").read_bytes() == b"jpeg"
