"""Writers of the two published model formats, from their published layouts, independent of the readers in
``facenet_pl.models.published``: a frozen TensorFlow ``GraphDef`` encoded in protobuf's wire format by hand (field
numbers of tensorflow/core/framework/{graph,node_def,attr_value,tensor,tensor_shape}.proto), and dlib's DNN
serialisation (dlib/serialize.h, dlib/dnn/core.h and layers.h)."""

from __future__ import annotations

import struct

import numpy as np

# -- protobuf wire format ----------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _vi(field: int, n: int) -> bytes:
    return _varint(field << 3 | 0) + _varint(n)


DT_FLOAT, DT_INT32 = 1, 3


def tensor_proto(a: np.ndarray, as_values: bool = False) -> bytes:
    """TensorProto: dtype 1, tensor_shape 2 (dim 2: size 1), tensor_content 4, or float_val 5 / int_val 7."""
    dtype = DT_FLOAT if a.dtype == np.float32 else DT_INT32
    shape = b"".join(_ld(2, _vi(1, int(d))) for d in a.shape)
    out = _vi(1, dtype) + _ld(2, shape)
    if as_values:
        packed = a.astype("<f4").tobytes() if dtype == DT_FLOAT else b"".join(_varint(int(v)) for v in a.ravel())
        return out + _ld(5 if dtype == DT_FLOAT else 7, packed)
    return out + _ld(4, a.astype("<f4" if dtype == DT_FLOAT else "<i4").tobytes())


def attr_value(v) -> bytes:
    """AttrValue: list 1 (ListValue: s 2, i 3 packed), s 2, i 3, f 4, b 5, tensor 8."""
    if isinstance(v, np.ndarray):
        return _ld(8, tensor_proto(v))
    if isinstance(v, bool):
        return _vi(5, int(v))
    if isinstance(v, int):
        return _vi(3, v)
    if isinstance(v, float):
        return _varint(4 << 3 | 5) + struct.pack("<f", v)
    if isinstance(v, str | bytes):
        return _ld(2, v.encode() if isinstance(v, str) else v)
    if isinstance(v, list):
        return _ld(1, _ld(3, b"".join(_varint(int(i)) for i in v)))
    raise TypeError(type(v))


def node_def(name: str, op: str, inputs=(), attrs=None) -> bytes:
    """NodeDef: name 1, op 2, input 3, attr 5 (map entries: key 1, value 2)."""
    out = _ld(1, name.encode()) + _ld(2, op.encode()) + b"".join(_ld(3, i.encode()) for i in inputs)
    for k, v in (attrs or {}).items():
        out += _ld(5, _ld(1, k.encode()) + _ld(2, attr_value(v)))
    return out


def graph_def(nodes: list[bytes]) -> bytes:
    """GraphDef: node 1."""
    return b"".join(_ld(1, n) for n in nodes)


def const_node(name: str, a: np.ndarray, as_values: bool = False) -> bytes:
    out = _ld(1, name.encode()) + _ld(2, b"Const")
    out += _ld(5, _ld(1, b"dtype") + _ld(2, _vi(6, DT_FLOAT)))
    out += _ld(5, _ld(1, b"value") + _ld(2, _ld(8, tensor_proto(a, as_values))))
    return out


# -- dlib serialisation ------------------------------------------------------------------------------------------


def d_int(n: int) -> bytes:
    """dlib's compact integer: a header byte (low nibble: byte count; 0x80: negative), then little-endian bytes."""
    neg, n = n < 0, abs(int(n))
    body = n.to_bytes((n.bit_length() + 7) // 8, "little") if n else b""
    return bytes([len(body) | (0x80 if neg else 0)]) + body


def d_str(s: str) -> bytes:
    return d_int(len(s)) + s.encode()


def d_bool(b: bool) -> bytes:
    return b"1" if b else b"0"


def d_float(x: float) -> bytes:
    """dlib's float_details: an int64 mantissa and an int16 exponent, x = m * 2^e."""
    if x == 0:
        return d_int(0) + d_int(0)
    m, e = np.frexp(x)
    return d_int(int(m * 2**53)) + d_int(int(e) - 53)


def d_tensor(a: np.ndarray | None) -> bytes:
    """resizable_tensor: version 2, n, k, nr, nc, then little-endian float32."""
    a = np.zeros((0, 0, 0, 0), np.float32) if a is None else np.asarray(a, np.float32)
    shape = tuple(a.shape) + (1,) * (4 - a.ndim)
    return d_int(2) + b"".join(d_int(s) for s in shape) + a.astype("<f4").tobytes()


def d_alias(shape) -> bytes:
    return d_int(1) + b"".join(d_int(s) for s in shape)


def dlib_layer(kind: str, **v) -> bytes:
    """One layer's details, as each dlib layer's ``serialize`` writes them."""
    out = d_str(kind)
    if kind == "con_4":
        w, b = v["weight"], v["bias"]
        out += d_tensor(np.concatenate([w.ravel(), b.ravel()])[:, None, None, None])
        out += b"".join(d_int(x) for x in (w.shape[0], w.shape[2], w.shape[3], *v["stride"], *v["padding"]))
        out += d_alias(w.shape) + d_alias((1, w.shape[0], 1, 1))
        out += b"".join(d_float(x) for x in (1.0, 1.0, 1.0, 0.0))
    elif kind == "affine_":
        g, b = v["gamma"], v["beta"]
        out += d_tensor(np.concatenate([g, b])[:, None, None, None])
        out += d_alias((1, len(g), 1, 1)) * 2 + d_int(0)
    elif kind in ("avg_pool_2", "max_pool_2"):
        out += b"".join(d_int(x) for x in (*v["size"], *v["stride"], *v["padding"]))
    elif kind == "fc_2":
        w = v["weight"]  # (inputs, outputs), dlib's layout
        out += d_int(w.shape[1]) + d_int(w.shape[0]) + d_tensor(w[:, :, None, None])
        out += d_alias((w.shape[0], w.shape[1], 1, 1)) + d_alias((0, 0, 0, 0)) + d_int(1)
        out += b"".join(d_float(x) for x in (1.0, 1.0, 1.0, 0.0))
    return out


def dlib_net(layers: list[bytes], wrappers: list[int], mean_rgb=(122.782, 117.001, 104.298), size=150) -> bytes:
    """A ``loss_metric`` network: loss details, the wrappers' versions (outermost first, the bottom add_layer's 3
    last), the input layer, then each layer's details in forward order with its wrapper's state."""
    out = d_int(1) + d_str("loss_metric_2") + d_float(0.04) + d_float(0.6)
    out += b"".join(d_int(w) for w in wrappers)
    out += d_str("input_rgb_image_sized") + b"".join(d_float(m) for m in mean_rgb) + d_int(size) + d_int(size)
    for i, layer in enumerate(layers):
        out += layer + d_bool(True) + d_bool(True) + d_bool(False) + d_tensor(None) * 3
        if i == 0:
            out += d_int(1)  # the bottom layer's sample expansion factor
    return out
