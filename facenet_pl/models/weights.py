"""Starting a network from weights on disk: ``backbone.weights`` (a state dict of the backbone alone, e.g.
timesler's VGGFace2 Inception-ResNet-v1) and ``model.init_from`` (another facenet-pl model).

Both are read without running code from the file (``torch.load(weights_only=True)`` or ``.safetensors``), only
when a run starts (a resumed run takes its weights from its checkpoint, and a model rebuilt for inference from
its own file), and every mismatch is one line naming the keys, before any image is decoded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from facenet_pl.utils.errors import ConfigError

log = logging.getLogger(__name__)

#: Prefixes of a source network's classifier: dropped, since an embedding network has none.
CLASSIFIER_PREFIXES = ("logits.", "fc.", "classifier.", "head.fc.", "head.")
#: Containers a training script may have wrapped a state dict in.
_WRAPPERS = ("state_dict", "model", "model_state_dict", "net")


def _names(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pt``/``.pth``/``.bin`` state dict or a ``.safetensors`` file; ``what`` names the config key
    in errors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what}={str(path)!r} is not a file")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ConfigError(f"{what}={path}: not a readable .safetensors file ({e})") from None
    from facenet_pl.utils.fileio import safe_torch_load

    obj = safe_torch_load(
        path, f"{what}={path}", "Re-save its state_dict with torch.save(model.state_dict(), ...).", "weights file"
    )
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{what}={path} is not a state dict (a mapping of names to tensors)")
    prefix = "module."  # saved from a DataParallel/DDP-wrapped model
    if all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj


def load_backbone_weights(backbone: nn.Module, path: str | Path, name: str) -> None:
    """Load the state dict at ``path`` into ``backbone`` (the timm network of ``backbone.name``=``name``).

    The source's classifier (``logits.*``, ``fc.*``, ...) is dropped; any other key the network lacks, any of its
    keys the file lacks (BatchNorm's ``num_batches_tracked`` aside) and any shape that differs is a
    :class:`ConfigError` naming them.
    """
    what = "backbone.weights"
    state = read_state_dict(path, what)
    own = backbone.state_dict()
    dropped = [k for k in state if k not in own and k.startswith(CLASSIFIER_PREFIXES)]
    unexpected = [k for k in state if k not in own and k not in dropped]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if unexpected or missing:
        raise ConfigError(
            f"{what}={path} does not fit backbone.name={name}: "
            + "; ".join(
                s
                for s in (
                    f"{len(missing)} of its tensors are not in the file ({_names(missing)})" if missing else "",
                    f"{len(unexpected)} tensors of the file are not in it ({_names(unexpected)})" if unexpected else "",
                )
                if s
            )
            + ". Choose the backbone the file was saved from (inception_resnet_v1 for facenet-pytorch's files)"
        )
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if shapes:
        raise ConfigError(
            f"{what}={path}: tensors of another shape than backbone.name={name}'s: {'; '.join(shapes[:3])}"
        )
    backbone.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    log.info(
        "backbone.weights: loaded %d tensors from %s%s",
        len(state) - len(dropped),
        path,
        f" (dropped the classifier: {_names(dropped)})" if dropped else "",
    )
