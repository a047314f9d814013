"""Size and cost of an embedding network: parameters and multiply-adds per image (FaceNet Figure 4's axes)."""

from __future__ import annotations

import copy
import weakref

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: What :func:`model_complexity` counted, per network object and input shape: the count does not depend on the
#: weights, so a run counts once (the model summary at fit start, metrics.json at its end).
_COUNTED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int], dict[str, float]]] = weakref.WeakKeyDictionary()


def model_complexity(net: nn.Module, input_size: int, channels: int = 3) -> dict[str, float]:
    """``{"model/params": ..., "model/macs_per_image": ...}`` of ``net`` on one ``channels x input_size^2`` image.

    Multiply-adds are counted by ``torch.utils.flop_counter`` (convolutions and matrix products; it reports
    2 FLOPs per multiply-add, halved here) on a copy of the network in eval mode, so training state and
    BatchNorm statistics are untouched; a network already counted at this input size is not run again.
    """
    counted = _COUNTED.setdefault(net, {})
    if (input_size, channels) not in counted:
        params = sum(p.numel() for p in net.parameters())
        probe = copy.deepcopy(net).float().eval()
        x = torch.zeros(1, channels, input_size, input_size, device=next(net.parameters()).device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            probe(x)
        counted[(input_size, channels)] = {
            "model/params": float(params),
            "model/macs_per_image": counter.get_total_flops() / 2,
        }
    return dict(counted[(input_size, channels)])
