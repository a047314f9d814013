"""``model.compile`` through train.py (issue 31): a compiled run's checkpoint (its keys carry ``_orig_mod.``) is
evaluated, verified and exported like any other, and every export embeds as the checkpoint does. The ``eager``
backend traces the network with TorchDynamo as inductor does, without its C++ build (80 s here for 12 steps;
benchmarks/README.md, "torch.compile on the CPU")."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ..helpers import TINY, run_cli, run_entry, run_entry_in_fork, write_face_folders


@pytest.fixture(scope="module")
def compiled_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("compiled") / "run"
    # in a fork: TorchDynamo's backward leaves autograd threads in a process, and a later test that forks a
    # training from pytest's process then fails (torch: "autograd's threading in combination with fork")
    r = run_entry_in_fork("train.py", *TINY, "trainer.max_epochs=1", "model.compile=eager", f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr[-3000:]
    return run


def test_a_compiled_run_trains_and_its_checkpoint_is_used_like_any_other(compiled_run, tmp_path):
    ckpt = compiled_run / "checkpoints" / "last.ckpt"
    keys = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert any("._orig_mod." in k for k in keys)  # what torch.compile's wrapper writes
    metrics = json.loads((compiled_run / "metrics.json").read_text())
    r = run_entry("eval.py", f"ckpt_path={metrics['best_model_path']}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())["accuracy"] == pytest.approx(
        metrics["test/acc"], abs=1e-6
    )
    faces = write_face_folders(tmp_path / "faces", 2, 2)
    a, b = sorted(faces.rglob("*.png"))[:2]
    r = run_cli("verify", ckpt, a, b)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", ["m.safetensors", "m.onnx", "m.pt"])
def test_every_export_of_a_compiled_run_embeds_as_its_checkpoint(compiled_run, tmp_path, name):
    from facenet_pl.inference.embed import load_model

    ckpt = compiled_run / "checkpoints" / "last.ckpt"
    r = run_cli("export", ckpt, "-o", tmp_path / name)
    assert r.returncode == 0, r.stderr
    x = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    ref = load_model(ckpt).embed(x, flip=False).numpy()
    if name.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(tmp_path / name), "pt") as f:
            assert not [k for k in f.keys() if "_orig_mod" in k]
        got = load_model(tmp_path / name).embed(x, flip=False).numpy()
    elif name.endswith(".onnx"):
        import onnxruntime as ort

        sess = ort.InferenceSession(str(tmp_path / name))
        inp = ((x.float() - 127.5) / 128).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: inp})[0]
    else:
        net = torch.jit.load(str(tmp_path / name))
        got = net((x.float() - 127.5) / 128).detach().numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)
