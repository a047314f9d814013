"""Starting from trained weights: ``backbone=inception_resnet_v1`` against facenet-pytorch's own class,
``backbone.weights`` (a state dict in timesler's format) and ``model.init_from`` (another facenet-pl model), each
through ``train.py``'s code path and the real Trainer."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from facenet_pl.utils.errors import ConfigError
from tests.helpers import fixed_images, train_error_in_process, train_in_process

facenet_pytorch = pytest.importorskip("facenet_pytorch")

IRV1 = ["backbone=inception_resnet_v1", "model.head=none", "model.embedding_dim=512"]


@pytest.fixture(scope="module")
def timesler_file(tmp_path_factory):
    """A state dict written by facenet-pytorch's own InceptionResnetV1 (random weights, BatchNorm statistics
    drawn away from their defaults, and a 10-class ``logits`` layer as the published files carry), and the model."""
    torch.manual_seed(0)
    ref = facenet_pytorch.InceptionResnetV1(classify=True, num_classes=10).eval()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    ref.classify = False  # the embedding: L2-normalised last_bn output
    path = tmp_path_factory.mktemp("weights") / "20180402-114759-vggface2.pt"
    torch.save(ref.state_dict(), path)
    return path, ref


def test_inception_resnet_v1_embeds_like_facenet_pytorch(timesler_file):
    """The same file in both: our module's embedding of uint8 images (its model.normalization=fixed) equals
    facenet-pytorch's of the same images standardised by its own fixed_image_standardization."""
    from facenet_pl.models.weights import load_backbone_weights
    from tests.helpers import tiny_module

    path, ref = timesler_file
    module = tiny_module(
        backbone={"name": "inception_resnet_v1", "input_size": 160},
        model={"embedding_dim": 512, "head": "none", "normalization": "fixed", "channels_last": False},
    ).eval()
    load_backbone_weights(module.net.backbone, path, "inception_resnet_v1")
    images = torch.from_numpy(fixed_images(3, 160))
    with torch.no_grad():
        expected = ref(facenet_pytorch.fixed_image_standardization(images.float()))
    got = module.embed(images)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert sum(p.numel() for p in module.net.parameters()) == sum(
        p.numel() for n, p in ref.named_parameters() if not n.startswith("logits")
    )


def test_backbone_weights_that_do_not_fit_are_one_line(timesler_file, tmp_path):
    from facenet_pl.models.embedding import FaceNetEmbedding
    from facenet_pl.models.weights import load_backbone_weights

    path, _ = timesler_file
    small = FaceNetEmbedding("facenet_small", backbone_kwargs={"widths": [8, 8, 8, 8]})
    with pytest.raises(ConfigError, match=r"does not fit backbone.name=facenet_small: .* not in the file"):
        load_backbone_weights(small.backbone, path, "facenet_small")
    state = torch.load(path, weights_only=True)
    state["last_linear.weight"] = torch.zeros(256, 1792)
    bad_shape = tmp_path / "shape.pt"
    torch.save(state, bad_shape)
    irv1 = FaceNetEmbedding("inception_resnet_v1", embedding_dim=512, head="none")
    with pytest.raises(ConfigError, match=r"last_linear.weight \(256, 1792\) vs \(512, 1792\)"):
        load_backbone_weights(irv1.backbone, bad_shape, "inception_resnet_v1")

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    code = tmp_path / "code.pt"
    code.write_bytes(b"")
    torch.save({"conv2d_1a.conv.weight": Boom()}, code, _use_new_zipfile_serialization=True, pickle_module=pickle)
    with pytest.raises(ConfigError, match="would run code"):
        load_backbone_weights(irv1.backbone, code, "inception_resnet_v1")
    with pytest.raises(ConfigError, match="is not a file"):
        load_backbone_weights(irv1.backbone, tmp_path / "missing.pt", "inception_resnet_v1")
    with pytest.raises(ConfigError, match="model.embedding_dim=512"):
        FaceNetEmbedding("inception_resnet_v1", embedding_dim=128, head="none")


def test_two_finetuning_steps_start_from_the_file(timesler_file, tmp_path):
    """train.py with backbone.weights: two AdamW steps (lr 1e-3) move no weight of the file by more than about two
    learning rates, while a fresh network differs from it everywhere; the classifier is not in the checkpoint."""
    from facenet_pl.inference.model_files import read_checkpoint

    path, _ = timesler_file
    train_in_process(
        tmp_path,
        *IRV1,
        "backbone.input_size=80",
        f"backbone.weights={path}",
        "trainer.max_steps=2",
        "test=false",
        "optimizer.lr=1e-3",
    )
    ckpt = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 2
    state = torch.load(path, weights_only=True)
    net = {k[len("net.backbone.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.backbone.")}
    assert not any(k.startswith("logits") for k in net)
    params = [
        k for k in net if not k.startswith("last_bn.running") and "bn.running" not in k and "num_batches" not in k
    ]
    moved = max(float((net[k] - state[k]).abs().max()) for k in params)
    assert 0 < moved < 2.5e-3, moved
    torch.manual_seed(1)
    fresh = facenet_pytorch.InceptionResnetV1().state_dict()
    assert float((fresh["conv2d_1a.conv.weight"] - state["conv2d_1a.conv.weight"]).abs().max()) > 0.05


def test_init_from_starts_with_the_source_networks_embeddings(tmp_path):
    """A run with model.init_from=<checkpoint or exported .safetensors> embeds, before its first step, exactly as
    the source model does; another architecture is one line naming the keys that differ."""
    from facenet_pl.inference.embed import load_model
    from tests.helpers import run_cli

    src = tmp_path / "src"
    train_in_process(src, "trainer.max_epochs=1", "test=false")
    ckpt = src / "checkpoints" / "last.ckpt"
    source = load_model(ckpt)
    expected = source.embed(torch.from_numpy(fixed_images(6, source.input_size))).numpy()
    assert run_cli("export", ckpt, "-o", tmp_path / "m.safetensors").returncode == 0
    for i, model_file in enumerate((ckpt, tmp_path / "m.safetensors")):
        out = tmp_path / f"ft{i}"
        train_in_process(
            out,
            f"model.init_from={model_file}",
            "+callbacks.embed._target_=tests.helpers.EmbedAtTrainStart",
            f"+callbacks.embed.path={tmp_path / f'start{i}.npy'}",
            "trainer.max_steps=1",
            "test=false",
        )
        assert np.allclose(np.load(tmp_path / f"start{i}.npy"), expected, atol=1e-6)
    scratch = tmp_path / "scratch"
    train_in_process(
        scratch,
        "+callbacks.embed._target_=tests.helpers.EmbedAtTrainStart",
        f"+callbacks.embed.path={tmp_path / 'scratch.npy'}",
        "trainer.max_steps=1",
        "test=false",
    )
    assert not np.allclose(np.load(tmp_path / "scratch.npy"), expected, atol=1e-2)  # the check can fail
    msg = train_error_in_process(tmp_path / "bad", f"model.init_from={ckpt}", "model.embedding_dim=64")
    assert "model.init_from=" in msg and "model.embedding_dim=128 (this run: 64)" in msg
    msg = train_error_in_process(tmp_path / "both", f"model.init_from={ckpt}", f"backbone.weights={ckpt}")
    assert "backbone.weights and model.init_from both set" in msg
    # a checkpoint of an earlier (unreleased) version, whose FaceNetModule took val_folds and mining: one line
    # naming them and the way out (its export), not "not a facenet-pl model" from a TypeError
    old = torch.load(ckpt, map_location="cpu", weights_only=True)
    old["hyper_parameters"].update(val_folds=10, mining={"cross_rank": False})
    torch.save(old, tmp_path / "old.ckpt")
    msg = train_error_in_process(tmp_path / "from_old", f"model.init_from={tmp_path / 'old.ckpt'}")
    assert "another facenet-pl version" in msg and "mining, val_folds" in msg and "export" in msg, msg
    with pytest.raises(ConfigError, match="another facenet-pl version"):
        load_model(tmp_path / "old.ckpt")


def test_resume_takes_the_weights_from_the_checkpoint_not_the_file(tmp_path):
    """backbone.weights is read when a run starts, not when it resumes: the file may be gone by then."""
    from facenet_pl.models.embedding import FaceNetEmbedding

    weights = tmp_path / "small.pt"
    torch.save(
        FaceNetEmbedding("facenet_small", backbone_kwargs={"widths": [16, 32, 64, 128]}).backbone.state_dict(), weights
    )
    run = tmp_path / "run"
    train_in_process(run, f"backbone.weights={weights}", "trainer.max_epochs=1", "test=false")
    weights.unlink()
    train_in_process(run, f"backbone.weights={weights}", "trainer.max_epochs=2", "ckpt_path=last", "test=false")
    from facenet_pl.inference.model_files import read_checkpoint

    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 1
    msg = train_error_in_process(tmp_path / "new", f"backbone.weights={weights}")
    assert "backbone.weights=" in msg and "is not a file" in msg
