"""Reading dlib's serialised DNNs (``.dat``, e.g. ``dlib_face_recognition_resnet_model_v1.dat``) without dlib.

dlib writes a network from its loss layer down: the loss's details, one version number per wrapper (``add_layer``
2, the bottom ``add_layer`` on the input layer 3, ``add_tag_layer``/``add_skip_layer`` 1), the input layer, then
each computational layer's details in forward order, each followed by its wrapper's state (3 bools, 3 empty
tensors; the bottom one also its sample expansion factor). Primitives:

- integers: a header byte (low nibble: how many little-endian bytes follow; 0x80: negative), then those bytes;
- bools: ASCII ``'0'``/``'1'``; strings: an integer length, then the bytes;
- float/double: an integer mantissa m and an integer exponent e, the value m x 2^e;
- tensors: version 2, n, k, nr, nc, then n*k*nr*nc little-endian float32; alias tensors: version 1, n, k, nr, nc.

The reader knows the layer kinds the face models use (``con_4``, ``affine_``, ``relu_``, ``add_prev_``,
``avg_pool_2``, ``max_pool_2``, ``fc_2``) and refuses anything else in one line, naming the file and offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facenet_pl.utils.errors import ConfigError


class DlibFormatError(ConfigError):
    """A file that is not a dlib DNN of the layer kinds this reader knows."""


@dataclass
class DlibLayer:
    """One computational layer: its dlib kind and the values dlib stored for it (weights as numpy arrays)."""

    kind: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A whole network: the loss layer, the input layer and the layers in forward order (input first)."""

    loss: DlibLayer
    input: DlibLayer
    layers: list[DlibLayer]
    wrappers: list[int]


class _Cursor:
    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.pos, self.name = data, 0, name

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: not a dlib network this reader knows ({what} at byte {self.pos})")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"the file ends early (wanted {n} bytes)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        head = self.take(1)[0]
        size = head & 0x0F
        if size > 8 or head & 0x70:
            raise self.fail(f"bad integer header {head:#04x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if head & 0x80 else value

    def peek_int(self) -> int:
        pos = self.pos
        try:
            return self.int()
        finally:
            self.pos = pos

    def bool(self) -> bool:
        c = self.take(1)
        if c not in (b"0", b"1"):
            raise self.fail(f"bad bool {c!r}")
        return c == b"1"

    def str(self, limit: int = 256) -> str:
        n = self.int()
        if not 0 <= n <= limit:
            raise self.fail(f"a string of {n} bytes")
        return self.take(n).decode("latin-1")

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if not -1100 < exponent < 1100:
            raise self.fail(f"a float exponent of {exponent}")
        return float(np.ldexp(float(mantissa), exponent))

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise self.fail(f"tensor version {version} (expected 2)")
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"tensor shape {shape}")
        count = int(np.prod(shape))
        raw = self.take(4 * count)
        return np.frombuffer(raw, "<f4", count).astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, ...]:
        version = self.int()
        if version != 1:
            raise self.fail(f"alias tensor version {version} (expected 1)")
        return tuple(self.int() for _ in range(4))


def _details(c: _Cursor) -> DlibLayer:
    kind = c.str()
    v: dict[str, Any] = {}
    if kind == "con_4":
        params = c.tensor().ravel()
        n, nr, nc, sy, sx, py, px = (c.int() for _ in range(7))
        filters, biases = c.alias(), c.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            c.float()
        if filters[0] != n or biases != (1, n, 1, 1) or params.size != int(np.prod(filters)) + n:
            raise c.fail(f"con_4 of {n} filters shaped {filters} with {params.size} parameters")
        k = int(np.prod(filters))
        v.update(weight=params[:k].reshape(filters), bias=params[k:], stride=(sy, sx), padding=(py, px))
    elif kind == "affine_":
        params = c.tensor().ravel()
        gamma, beta = c.alias(), c.alias()
        v["mode"] = c.int()
        n = int(np.prod(gamma))
        if gamma != beta or params.size != 2 * n:
            raise c.fail(f"affine_ shaped {gamma}/{beta} with {params.size} parameters")
        v.update(gamma=params[:n].reshape(gamma), beta=params[n:].reshape(beta))
    elif kind in ("relu_", "add_prev_"):
        pass
    elif kind in ("avg_pool_2", "max_pool_2"):
        nr, nc, sy, sx, py, px = (c.int() for _ in range(6))
        v.update(size=(nr, nc), stride=(sy, sx), padding=(py, px))
    elif kind == "fc_2":
        outputs, inputs = c.int(), c.int()
        params = c.tensor()
        c.alias(), c.alias()  # the weights' and biases' views of the parameters
        v["bias_mode"] = c.int()
        for _ in range(4):
            c.float()
        if params.shape[:2] != (inputs + (v["bias_mode"] == 0), outputs):
            raise c.fail(f"fc_2 of {inputs} -> {outputs} with parameters shaped {params.shape}")
        bias = params[inputs:, :, 0, 0].ravel() if v["bias_mode"] == 0 else None
        v.update(weight=params[:inputs, :, 0, 0], bias=bias)
    else:
        raise c.fail(f"layer kind {kind!r}")
    return DlibLayer(kind, v)


def read_dlib_net(path: str | Path) -> DlibNet:
    """Parse a dlib DNN ``.dat`` file whose loss is ``loss_metric_2`` (dlib's face-recognition networks)."""
    path = Path(path)
    c = _Cursor(path.read_bytes(), str(path))
    if c.int() != 1:
        raise c.fail("loss layer version")
    kind = c.str()
    if kind != "loss_metric_2":
        raise c.fail(f"loss {kind!r} (expected loss_metric_2, a face-embedding network)")
    loss = DlibLayer(kind, {"margin": c.float(), "distance_threshold": c.float()})
    wrappers = []
    while c.peek_int() in (1, 2, 3):
        wrappers.append(c.int())
    if not wrappers or wrappers[-1] != 3:
        raise c.fail("wrapper versions (expected the bottom layer's 3 last)")
    kind = c.str()
    if kind != "input_rgb_image_sized":
        raise c.fail(f"input layer {kind!r}")
    inp = DlibLayer(kind, {"mean_rgb": (c.float(), c.float(), c.float()), "size": (c.int(), c.int())})
    layers = []
    expected = sum(1 for w in wrappers if w in (2, 3))
    for i in range(expected):
        layers.append(_details(c))
        for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output_and_gradient_input_disabled
            c.bool()
        for _ in range(3):  # x_grad, cached_output, params_grad (empty in a saved model)
            c.tensor()
        if i == 0:
            c.int()  # the bottom layer's sample expansion factor
    if c.pos != len(c.data):
        raise c.fail(f"{len(c.data) - c.pos} bytes after the last layer")
    return DlibNet(loss, inp, layers, wrappers)
