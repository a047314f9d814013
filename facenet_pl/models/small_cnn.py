"""``facenet_small``: a compact CNN registered in timm's model registry, the CPU-fast default.

Registered with ``timm.models.register_model`` so that ``timm.create_model("facenet_small",
num_classes=0)`` works like any timm model (``num_features``, ``forward_features``,
``reset_classifier``), and every timm option applies to it and to the big backbones alike.
"""

from __future__ import annotations

import torch
from timm.layers import ConvNormAct, SelectAdaptivePool2d
from timm.models import register_model
from torch import nn


class _ResidualStage(nn.Module):
    """Downsampling conv then a residual 3x3 pair."""

    def __init__(self, cin: int, cout: int, norm_layer: str = "batchnorm2d") -> None:
        super().__init__()
        self.down = ConvNormAct(cin, cout, 3, stride=2, norm_layer=norm_layer)
        self.conv1 = ConvNormAct(cout, cout, 3, norm_layer=norm_layer)
        self.conv2 = ConvNormAct(cout, cout, 3, apply_act=False, norm_layer=norm_layer)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return self.act(x + self.conv2(self.conv1(x)))


class SmallFaceCNN(nn.Module):
    """Four stride-2 residual stages (widths ``widths``) and global average pooling.

    ``norm_layer``: any timm norm name, e.g. ``batchnorm2d`` (default) or ``groupnorm1`` (per image: no
    batch statistics, so results do not depend on how a batch is split across DDP ranks).
    """

    def __init__(
        self,
        num_classes: int = 0,
        in_chans: int = 3,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        norm_layer: str = "batchnorm2d",
        **_: object,
    ) -> None:
        super().__init__()
        stages, cin = [], in_chans
        for w in widths:
            stages.append(_ResidualStage(cin, w, norm_layer))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.fc = nn.Linear(cin, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


@register_model
def facenet_small(pretrained: bool = False, **kwargs) -> SmallFaceCNN:
    """~1.2M-parameter CNN for 48-112 px faces; trains in minutes on a CPU. No pretrained weights."""
    if pretrained:
        raise ValueError("facenet_small has no pretrained weights: set backbone.pretrained=false")
    return SmallFaceCNN(**kwargs)
