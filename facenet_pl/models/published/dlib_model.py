"""dlib's face-recognition network (:mod:`~facenet_pl.models.dlib_resnet`) from its ``.dat`` file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facenet_pl.models.dlib_resnet import BLOCKS, DlibResNet
from facenet_pl.models.published.dlib_format import DlibFormatError, DlibNet, read_dlib_net


def _expected_kinds() -> list[str]:
    kinds = ["con_4", "affine_", "relu_", "max_pool_2"]
    for _, down in BLOCKS:
        kinds += ["con_4", "affine_", "relu_", "con_4", "affine_"] + (["avg_pool_2"] if down else [])
        kinds += ["add_prev_", "relu_"]
    return kinds + ["avg_pool_2", "fc_2"]


def dlib_state_dict(net: DlibNet, where: str = "the file") -> dict[str, torch.Tensor]:
    """The :class:`DlibResNet` state dict of a parsed dlib network; a network of another shape is one line."""
    kinds, expected = [layer.kind for layer in net.layers], _expected_kinds()
    if kinds != expected:  # the first layer that differs, or where the shorter list ends
        first = next((i for i, (a, b) in enumerate(zip(kinds, expected)) if a != b), min(len(kinds), len(expected)))
        raise DlibFormatError(
            f"{where}: not dlib's face-recognition ResNet ({len(kinds)} layers; layer {first} is "
            f"{kinds[first] if first < len(kinds) else 'missing'})"
        )
    model = DlibResNet()
    convs = [model.conv1, *(c for b in model.blocks for c in (b.conv1, b.conv2))]
    affines = [model.affine1, *(a for b in model.blocks for a in (b.affine1, b.affine2))]
    con_layers = [layer.values for layer in net.layers if layer.kind == "con_4"]
    aff_layers = [layer.values for layer in net.layers if layer.kind == "affine_"]
    names = {id(m): n for n, m in model.named_modules()}
    state: dict[str, torch.Tensor] = {}
    for conv, v in zip(convs, con_layers):
        if tuple(v["weight"].shape) != tuple(conv.weight.shape) or tuple(v["stride"]) != conv.stride:
            raise DlibFormatError(
                f"{where}: convolution {names[id(conv)]} is {v['weight'].shape} stride {v['stride']} in the file, "
                f"{tuple(conv.weight.shape)} stride {conv.stride} in dlib's face-recognition ResNet"
            )
        if tuple(v["padding"]) != conv.padding:
            raise DlibFormatError(f"{where}: convolution {names[id(conv)]} pads {v['padding']}, not {conv.padding}")
        state[names[id(conv)] + ".weight"] = torch.from_numpy(np.ascontiguousarray(v["weight"]))
        state[names[id(conv)] + ".bias"] = torch.from_numpy(np.ascontiguousarray(v["bias"]))
    for affine, v in zip(affines, aff_layers):
        if v["mode"] != 0 or v["gamma"].size != affine.weight.numel():
            raise DlibFormatError(f"{where}: affine layer {names[id(affine)]} is not per-channel of its width")
        state[names[id(affine)] + ".weight"] = torch.from_numpy(v["gamma"].ravel().copy())
        state[names[id(affine)] + ".bias"] = torch.from_numpy(v["beta"].ravel().copy())
    fc = net.layers[-1].values
    if fc["bias"] is not None or fc["weight"].shape != (model.fc.in_features, model.fc.out_features):
        raise DlibFormatError(f"{where}: its last layer is not a {model.fc.in_features} -> 128 map without bias")
    state["fc.weight"] = torch.from_numpy(np.ascontiguousarray(fc["weight"].T))
    pools = [layer.values for layer in net.layers if layer.kind in ("avg_pool_2", "max_pool_2")]
    expected_pools = [((3, 3), (2, 2))] + [((2, 2), (2, 2))] * 4 + [((0, 0), (1, 1))]
    if [(p["size"], p["stride"]) for p in pools] != expected_pools or any(p["padding"] != (0, 0) for p in pools):
        raise DlibFormatError(f"{where}: its pooling layers differ from dlib's face-recognition ResNet")
    return state


def read_dlib_model(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Weights (for ``backbone=dlib_resnet``) and what the file says of its input and threshold."""
    net = read_dlib_net(path)
    if net.input.values["size"] != (150, 150):
        raise DlibFormatError(f"{path}: input of {net.input.values['size']} px (dlib's face model takes 150 x 150)")
    from facenet_pl.models.normalization import DLIB_MEAN_RGB

    mean = net.input.values["mean_rgb"]
    if any(abs(float(m) - d) > 1e-3 for m, d in zip(mean, DLIB_MEAN_RGB)):  # model.normalization=dlib assumes these
        raise DlibFormatError(f"{path}: its input subtracts the channel means {mean}, not dlib's {DLIB_MEAN_RGB}")
    info = {
        "mean_rgb": [round(float(m), 6) for m in mean],
        "input_size": 150,
        "distance_threshold": float(net.loss.values["distance_threshold"]),
        "margin": float(net.loss.values["margin"]),
    }
    return dlib_state_dict(net, str(path)), info
