"""Reading a frozen TensorFlow graph (a ``GraphDef`` protobuf, ``.pb``) without TensorFlow.

The messages are the ones tensorboard ships compiled (``tensorboard.compat.proto``); the constants come back as
numpy arrays by name, the operations as (op, inputs, attributes) so a converter can check the graph's shape
(strides, paddings, scales) rather than assume it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facenet_pl.utils.errors import ConfigError


class GraphFormatError(ConfigError):
    """A file that is not a frozen TensorFlow graph."""


@dataclass
class GraphNode:
    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any]


def _attr(value) -> Any:
    kind = value.WhichOneof("value")
    if kind == "list":
        return list(value.list.i) or [s.decode() for s in value.list.s] or list(value.list.f)
    if kind == "s":
        return value.s.decode(errors="replace")
    if kind in ("i", "f", "b"):
        return getattr(value, kind)
    return None  # tensors are read as constants; types and shapes are not needed


def read_frozen_graph(path: str | Path) -> tuple[dict[str, np.ndarray], list[GraphNode]]:
    """``(constants by node name, every node in file order)`` of a frozen ``GraphDef``."""
    try:
        from google.protobuf.message import DecodeError
        from tensorboard.compat.proto import graph_pb2
        from tensorboard.util import tensor_util
    except ImportError:
        raise ConfigError(
            "reading a TensorFlow graph needs tensorboard's protobuf messages: pip install 'facenet-pl[weights]'"
        ) from None
    path = Path(path)
    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(path.read_bytes())
    except DecodeError as e:
        raise GraphFormatError(f"{path}: not a frozen TensorFlow graph (GraphDef protobuf): {e}") from None
    if not graph.node:
        raise GraphFormatError(f"{path}: not a frozen TensorFlow graph (no nodes in it)")
    consts: dict[str, np.ndarray] = {}
    nodes = []
    for n in graph.node:
        if n.op == "Const":
            try:
                consts[n.name] = np.asarray(tensor_util.make_ndarray(n.attr["value"].tensor))
            except (TypeError, ValueError) as e:
                raise GraphFormatError(f"{path}: constant {n.name} cannot be read ({e})") from None
        nodes.append(GraphNode(n.name, n.op, list(n.input), {k: _attr(v) for k, v in n.attr.items() if k != "value"}))
    return consts, nodes
