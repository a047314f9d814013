"""Published face models brought in exactly (``facenet-pl import-weights``): the readers against files written by
this suite's own writers of each format (tests/format_writers.py), and the imported networks against their
references' outputs on the same input (tests/assets/published/make_references.py: dlib-bin 20.0.1 and OpenCV 4.6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facenet_pl.utils.errors import ConfigError

from ..format_writers import const_node, dlib_layer, dlib_net, graph_def, node_def
from ..helpers import run_cli

DATA = Path(__file__).resolve().parents[1] / "assets" / "published"


def _faces() -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(
        np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(DATA.glob("face*.png"))])
    ).permute(0, 3, 1, 2)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Both published models imported from their installed packages by the command a user runs."""
    out = tmp_path_factory.mktemp("published")
    for name in ("dlib", "facenet-casia"):
        r = run_cli("import-weights", name, "-o", out / f"{name}.safetensors")
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"--template {'dlib' if name == 'dlib' else 'box'}" in r.stdout
    return out


def test_dlib_embeds_as_dlib_does(imported):
    """dlib's ``compute_face_descriptor`` on 150 px chips, unit-normalised: within 1e-5 through the model file."""
    from facenet_pl.inference.embed import load_model

    module = load_model(imported / "dlib.safetensors")
    assert (module.input_size, module.normalization, module.net.embedding_dim) == (150, "dlib", 128)
    with torch.no_grad():
        ours = module.embed(_faces()[:, :, 5:155, 5:155].contiguous(), flip=False).double().numpy()
    ref = _unit(np.load(DATA / "dlib.npy").astype(np.float64))
    assert np.abs(ours - ref).max() <= 1e-5
    assert np.abs(ours[0] - ref[1]).max() > 0.01  # the faces differ: a constant output would not pass


def test_facenet_casia_embeds_as_the_graph_does(imported):
    """OpenCV 4.6's forward of the frozen graph on ``(x - 127.5) / 128``: within 1e-4 through the model file."""
    from facenet_pl.inference.embed import load_model

    module = load_model(imported / "facenet-casia.safetensors")
    assert (module.input_size, module.net.embedding_dim) == (160, 512)
    with torch.no_grad():
        ours = module.net((_faces().float() - 127.5) / 128.0).double().numpy()
    ref = np.load(DATA / "facenet_casia.npy").astype(np.float64)
    assert np.abs(ours - ref).max() <= 1e-4
    assert np.abs(ours[0] - ref[1]).max() > 0.01


def test_an_imported_model_carries_its_description(imported):
    import json

    from safetensors import safe_open

    with safe_open(str(imported / "dlib.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["facenet_pl"])
    assert meta["preprocess"]["align"] == {"template": "dlib", "size": 150}
    assert meta["source"]["package"] == "face-recognition-models" and "public domain" in meta["source"]["about"]
    assert meta["backbone"]["name"] == "dlib_resnet" and meta["normalization"] == "dlib"
    assert 0 < meta["threshold"] < 4 and "LFW" in meta["calibration"]["on"]  # verify works at once


# -- dlib's format ---------------------------------------------------------------------------------------------


def _dlib_file_of(model, mean_rgb=None) -> bytes:
    """dlib's serialisation of a DlibResNet's weights, in dlib's layer order (its wrappers: one add_layer per
    layer, tag and skip layers between)."""
    from facenet_pl.models.dlib_resnet import BLOCKS

    def con(c):
        return dlib_layer("con_4", weight=c.weight.detach().numpy(), bias=c.bias.detach().numpy(),
                          stride=c.stride, padding=c.padding)  # fmt: skip

    def aff(a):
        return dlib_layer("affine_", gamma=a.weight.detach().numpy(), beta=a.bias.detach().numpy())

    pool = dlib_layer("max_pool_2", size=(3, 3), stride=(2, 2), padding=(0, 0))
    layers = [con(model.conv1), aff(model.affine1), dlib_layer("relu_"), pool]
    for block, (_, down) in zip(model.blocks, BLOCKS):
        layers += [con(block.conv1), aff(block.affine1), dlib_layer("relu_"), con(block.conv2), aff(block.affine2)]
        if down:
            layers.append(dlib_layer("avg_pool_2", size=(2, 2), stride=(2, 2), padding=(0, 0)))
        layers += [dlib_layer("add_prev_"), dlib_layer("relu_")]
    layers += [dlib_layer("avg_pool_2", size=(0, 0), stride=(1, 1), padding=(0, 0))]
    layers += [dlib_layer("fc_2", weight=model.fc.weight.detach().numpy().T.copy())]
    wrappers = [2] * (len(layers) - 1)
    wrappers[3:3] = [1, 1]  # a tag and a skip layer
    return dlib_net(layers, wrappers + [3], **({"mean_rgb": mean_rgb} if mean_rgb else {}))


def test_the_dlib_reader_reads_what_dlibs_layout_holds(tmp_path):
    from facenet_pl.models.dlib_resnet import DlibResNet
    from facenet_pl.models.published.dlib_model import read_dlib_model

    torch.manual_seed(0)
    model = DlibResNet()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    path = tmp_path / "net.dat"
    path.write_bytes(_dlib_file_of(model))
    state, info = read_dlib_model(path)
    assert info["distance_threshold"] == pytest.approx(0.6) and info["mean_rgb"] == pytest.approx(
        [122.782, 117.001, 104.298]
    )
    own = model.state_dict()
    assert sorted(state) == sorted(own)
    for k in own:
        assert torch.equal(state[k], own[k]), k


@pytest.mark.parametrize("damage", ["truncated", "another_layer", "not_dlib", "other_input_means"])
def test_a_damaged_dlib_file_is_one_line_naming_it(tmp_path, damage):
    from facenet_pl.models.dlib_resnet import DlibResNet

    data = _dlib_file_of(DlibResNet(), mean_rgb=(127.5, 127.5, 127.5) if damage == "other_input_means" else None)
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "another_layer":
        data = data.replace(b"\x05relu_", b"\x05gelu_", 1)
    else:
        data = b"\x89PNG\r\n\x1a\n" + bytes(100)
    path = tmp_path / "bad.dat"
    path.write_bytes(data)
    r = run_cli("import-weights", "dlib", "--from", path, "-o", tmp_path / "m.safetensors")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1 and str(path) in lines[0], r.stderr[-2000:]
    assert not (tmp_path / "m.safetensors").exists() and [p.name for p in tmp_path.iterdir()] == ["bad.dat"]


def test_add_prev_zero_fills_the_smaller_input_top_left():
    """dlib's add_prev, re-computed with numpy: the larger shape, each input zero-filled bottom/right and in the
    channels it lacks."""
    from facenet_pl.models.dlib_resnet import add_prev

    a, b = torch.randn(2, 4, 3, 3), torch.randn(2, 6, 4, 4)
    ref = np.zeros((2, 6, 4, 4), np.float32)
    ref[:, :4, :3, :3] += a.numpy()
    ref += b.numpy()
    assert np.array_equal(add_prev(a, b).numpy(), ref) and np.array_equal(add_prev(b, a).numpy(), ref)


# -- TensorFlow's GraphDef -------------------------------------------------------------------------------------


def test_the_graph_reader_reads_constants_and_attributes_of_a_hand_encoded_graph(tmp_path):
    from facenet_pl.models.published.tf_graph import read_frozen_graph

    w = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) / 7
    path = tmp_path / "g.pb"
    path.write_bytes(
        graph_def(
            [
                node_def("input", "Placeholder"),
                const_node("net/conv/weights", w),
                const_node("net/mul/x", np.array(0.17, np.float32), as_values=True),
                node_def(
                    "net/conv/Conv2D",
                    "Conv2D",
                    ["input:0", "net/conv/weights"],
                    {"strides": [1, 2, 2, 1], "padding": "VALID", "use_cudnn_on_gpu": True},
                ),  # fmt: skip
            ]
        )
    )
    consts, nodes = read_frozen_graph(path)
    assert sorted(consts) == ["net/conv/weights", "net/mul/x"]
    assert np.array_equal(consts["net/conv/weights"], w) and float(consts["net/mul/x"]) == pytest.approx(0.17)
    conv = nodes[-1]
    assert (conv.op, conv.inputs, conv.attrs["strides"], conv.attrs["padding"]) == (
        "Conv2D", ["input:0", "net/conv/weights"], [1, 2, 2, 1], "VALID"
    )  # fmt: skip


def test_a_graph_of_another_network_is_one_line(tmp_path):
    from facenet_pl.models.published.facenet_graph import facenet_graph_state_dict

    path = tmp_path / "other.pb"
    path.write_bytes(graph_def([node_def("input", "Placeholder"), const_node("resnet/w", np.ones(3, np.float32))]))
    with pytest.raises(ConfigError, match="not an Inception-ResNet-v1 graph"):
        facenet_graph_state_dict(path)
    path.write_bytes(b"\xff" * 64)
    r = run_cli("import-weights", "facenet-casia", "--from", path, "-o", tmp_path / "m.safetensors")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1 and str(path) in lines[0], r.stderr


def test_import_weights_never_overwrites_a_model_file(tmp_path, imported):
    out = tmp_path / "mine.safetensors"
    out.write_bytes(b"mine")
    r = run_cli("import-weights", "dlib", "-o", out)
    assert r.returncode != 0 and out.read_bytes() == b"mine"


@pytest.mark.parametrize(
    "experiment, name, described",
    [("finetune_dlib", "dlib", (150, "dlib", 128)), ("finetune_facenet_casia", "facenet-casia", (160, "fixed", 512))],
)
def test_fine_tuning_starts_from_the_imported_model(tmp_path, imported, experiment, name, described):
    """``experiment=finetune_dlib`` / ``finetune_facenet_casia`` through train.py on a folder of faces: at learning
    rate 0 the trained checkpoint holds exactly the imported weights and statistics (the run started from them, with
    the model's input and head; the folded BatchNorm's identity statistics kept, not pulled toward the batches'); the
    folder is read at the model's input size."""
    from facenet_pl.inference.embed import load_model
    from facenet_pl.models.published import read_published

    from ..helpers import SMALL_IDENTITY_DATA, run_entry, write_face_folders

    faces = write_face_folders(tmp_path / "faces", 32, 4)
    run = tmp_path / "run"
    model = imported / f"{name}.safetensors"
    r = run_entry(
        "train.py", f"experiment={experiment}", f"model.init_from={model}",
        f"data.root={faces}", *SMALL_IDENTITY_DATA, "optimizer.lr=0", "optimizer.weight_decay=0",
        "trainer.max_epochs=1", "data.batches_per_epoch=2", "test=false", f"hydra.run.dir={run}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    module = load_model(run / "checkpoints" / "last.ckpt")
    assert (module.input_size, module.normalization, module.net.embedding_dim) == described
    state, _ = read_published(name)
    own = module.net.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.endswith("num_batches_tracked"))


def test_a_model_that_names_its_alignment_aligns_raw_photos_itself(tmp_path, imported):
    """``embed`` with an imported model on raw photos = ``align --template dlib`` then ``embed --aligned`` on the
    crops; the same face pasted at two places embeds the same; a photo without a face is skipped and said."""
    from PIL import Image

    from ..data.test_align import FOUND, _photo, _render

    faces, _ = _render(FOUND[:1])
    face = faces[FOUND[0]]
    src = tmp_path / "photos"
    (src / "p").mkdir(parents=True)
    Image.fromarray(_photo(face)).save(src / "p" / "a.png")
    Image.fromarray(_photo(face, left=100, top=140)).save(src / "p" / "b.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 40, (200, 200, 3)).astype(np.uint8)).save(src / "p" / "c.png")
    model = imported / "dlib.safetensors"
    r = run_cli("embed", model, src, "-o", tmp_path / "raw.npy")
    assert r.returncode == 0 and "skipped 1 unreadable or faceless file(s)" in r.stderr, r.stderr
    assert run_cli("align", src, tmp_path / "crops", "--template", "dlib", "--device", "cpu").returncode == 0
    r = run_cli("embed", model, tmp_path / "crops", "--aligned", "-o", tmp_path / "crops.npy")
    assert r.returncode == 0, r.stderr
    raw, crops = np.load(tmp_path / "raw.npy"), np.load(tmp_path / "crops.npy")
    assert raw.shape == crops.shape == (2, 128) and np.abs(raw - crops).max() < 1e-5
    assert ((raw[0] - raw[1]) ** 2).sum() < 0.01  # the face found and placed alike wherever it was
    r = run_cli("embed", model, src / "p" / "a.png", "--aligned", "-o", tmp_path / "unaligned.npy")
    assert ((np.load(tmp_path / "unaligned.npy")[0] - raw[0]) ** 2).sum() > 0.05  # the photo as is: another input
