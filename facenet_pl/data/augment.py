"""Training-time augmentation of whole uint8 batches on their device (``augment=none|flip|standard|strong``).

The ops are kornia.augmentation classes (``_target_`` entries of ``augment.ops``, applied in the order
given): each draws its random parameters per image, vectorised over the batch, on the batch's device, from
torch's global random state (which checkpoints save, so a resumed run continues the same draws). Validation,
test, ``eval.py`` and the CLI never augment.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from facenet_pl.utils.errors import ConfigError


class BatchAugment(nn.Module):
    """uint8 or float [0, 255] (N, C, H, W) -> augmented float [0, 255], same shape."""

    def __init__(self, ops: dict[str, nn.Module]) -> None:
        super().__init__()
        self.names = list(ops)
        self.ops = nn.Sequential(*ops.values())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.ops(images.float() / 255.0)
        return x.clamp_(0.0, 1.0) * 255.0

    def extra_repr(self) -> str:
        return ", ".join(self.names)


def build_augment(cfg: dict[str, Any] | None) -> BatchAugment | None:
    """The ``augment`` config group (a plain dict ``{"ops": {name: {_target_: ..., **kwargs} | None}}``) -> a
    :class:`BatchAugment`, or None when it has no ops (``augment=none``). Entries set to null are skipped."""
    ops_cfg = {k: v for k, v in ((cfg or {}).get("ops") or {}).items() if v}
    if not ops_cfg:
        return None
    from hydra.utils import get_class

    def plain(v: Any) -> Any:  # kornia wants (h, w) tuples where YAML has lists
        return tuple(plain(x) for x in v) if isinstance(v, list | tuple) else v

    ops: dict[str, nn.Module] = {}
    for name, spec in ops_cfg.items():
        if not isinstance(spec, dict) or "_target_" not in spec:
            raise ConfigError(
                f"augment.ops.{name}: expected a kornia.augmentation class as _target_ with its arguments, got {spec!r}"
            )
        try:
            cls = get_class(spec["_target_"])
            ops[name] = cls(**{k: plain(v) for k, v in spec.items() if k != "_target_"})
        except Exception as e:  # noqa: BLE001  (a wrong class or argument: the library's message, one line)
            raise ConfigError(f"augment.ops.{name} ({spec['_target_']}): {str(e).splitlines()[0]}") from None
        if not isinstance(ops[name], nn.Module):
            raise ConfigError(f"augment.ops.{name}: {spec['_target_']} is not a torch module")
    return BatchAugment(ops)
