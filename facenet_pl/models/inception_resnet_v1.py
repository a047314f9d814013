"""``inception_resnet_v1``: Inception-ResNet-v1 (Szegedy et al. 2016) as FaceNet implementations use it.

The network of davidsandberg/facenet's and timesler/facenet-pytorch's published face models (trained on
VGGFace2 and CASIA-WebFace). Its module and parameter names are those of facenet-pytorch's
``InceptionResnetV1``, so their state dicts load as they are (``backbone.weights=20180402-114759-vggface2.pt``;
the ``logits.*`` classifier is dropped), and ``tests/models/test_weights.py`` checks that both give the same embeddings.

Registered with timm like ``facenet_small``: ``forward_features`` is the 1792-channel map after ``block8``;
the head pools it, applies dropout (0.6, that model's training setting), the 512-d bottleneck ``last_linear``
and ``last_bn``: that 512-d vector, L2-normalised, is those models' embedding (``model.head=none``).
"""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3, as in the TensorFlow original), ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride: int = 1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001, momentum=0.1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _branch(*convs: nn.Module) -> nn.Module:
    """One conv stands alone (``branch0.conv``), several are a Sequential (``branch1.0.conv``)."""
    return convs[0] if len(convs) == 1 else nn.Sequential(*convs)


class _ResidualInception(nn.Module):
    """Parallel branches, concatenated, projected by a 1x1 convolution back to the input width, scaled and added
    to the input (then ReLU unless ``relu=False``): the Block35 / Block17 / Block8 pattern."""

    def __init__(self, branches: list[nn.Module], width_cat: int, width: int, scale: float, relu: bool = True):
        super().__init__()
        for i, b in enumerate(branches):
            self.add_module(f"branch{i}", b)
        self.n_branches, self.scale = len(branches), float(scale)
        self.conv2d = nn.Conv2d(width_cat, width, 1)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.n_branches)], 1)
        return self.relu(self.conv2d(out) * self.scale + x)


def block35(scale: float = 0.17) -> _ResidualInception:
    c = BasicConv2d
    branches = [
        _branch(c(256, 32, 1)),
        _branch(c(256, 32, 1), c(32, 32, 3, padding=1)),
        _branch(c(256, 32, 1), c(32, 32, 3, padding=1), c(32, 32, 3, padding=1)),
    ]
    return _ResidualInception(branches, 96, 256, scale)


def block17(scale: float = 0.10) -> _ResidualInception:
    c = BasicConv2d
    branches = [
        _branch(c(896, 128, 1)),
        _branch(c(896, 128, 1), c(128, 128, (1, 7), padding=(0, 3)), c(128, 128, (7, 1), padding=(3, 0))),
    ]
    return _ResidualInception(branches, 256, 896, scale)


def block8(scale: float = 0.20, relu: bool = True) -> _ResidualInception:
    c = BasicConv2d
    branches = [
        _branch(c(1792, 192, 1)),
        _branch(c(1792, 192, 1), c(192, 192, (1, 3), padding=(0, 1)), c(192, 192, (3, 1), padding=(1, 0))),
    ]
    return _ResidualInception(branches, 384, 1792, scale, relu)


class _Reduction(nn.Module):
    """Parallel strided branches, the last a max-pool, concatenated: Mixed_6a / Mixed_7a."""

    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        for i, b in enumerate(branches):
            self.add_module(f"branch{i}", b)
        self.n_branches = len(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.n_branches)], 1)


def mixed_6a() -> _Reduction:
    c = BasicConv2d
    return _Reduction(
        [
            c(256, 384, 3, stride=2),
            _branch(c(256, 192, 1), c(192, 192, 3, padding=1), c(192, 256, 3, stride=2)),
            nn.MaxPool2d(3, 2),
        ]
    )


def mixed_7a() -> _Reduction:
    c = BasicConv2d
    return _Reduction(
        [
            _branch(c(896, 256, 1), c(256, 384, 3, stride=2)),
            _branch(c(896, 256, 1), c(256, 256, 3, stride=2)),
            _branch(c(896, 256, 1), c(256, 256, 3, padding=1), c(256, 256, 3, stride=2)),
            nn.MaxPool2d(3, 2),
        ]
    )


class InceptionResnetV1(nn.Module):
    """Stem, 5 x Block35, Mixed_6a, 10 x Block17, Mixed_7a, 5 x Block8 (+ one without ReLU), then the head:
    average pool, dropout, ``last_linear`` (1792 -> 512, no bias), ``last_bn``, and ``logits`` when
    ``num_classes`` > 0. Inputs of 80 px and more (160 px for the published weights)."""

    def __init__(
        self, num_classes: int = 0, in_chans: int = 3, drop_rate: float = 0.6, bottleneck: int = 512, **_: object
    ) -> None:
        super().__init__()
        c = BasicConv2d
        self.conv2d_1a = c(in_chans, 32, 3, stride=2)
        self.conv2d_2a = c(32, 32, 3)
        self.conv2d_2b = c(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = c(64, 80, 1)
        self.conv2d_4a = c(80, 192, 3)
        self.conv2d_4b = c(192, 256, 3, stride=2)
        self.repeat_1 = nn.Sequential(*[block35() for _ in range(5)])
        self.mixed_6a = mixed_6a()
        self.repeat_2 = nn.Sequential(*[block17() for _ in range(10)])
        self.mixed_7a = mixed_7a()
        self.repeat_3 = nn.Sequential(*[block8() for _ in range(5)])
        self.block8 = block8(scale=1.0, relu=False)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.last_linear = nn.Linear(1792, bottleneck, bias=False)
        self.last_bn = nn.BatchNorm1d(bottleneck, eps=0.001, momentum=0.1)
        self.num_features, self.head_hidden_size = 1792, bottleneck
        self.num_classes = num_classes
        self.logits = nn.Linear(bottleneck, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b"):
            x = getattr(self, name)(x)
        for name in ("repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8"):
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.last_bn(self.last_linear(self.dropout(self.avgpool_1a(x).flatten(1))))
        return x if pre_logits else self.logits(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.logits

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.logits = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()


@register_model
def inception_resnet_v1(pretrained: bool = False, **kwargs) -> InceptionResnetV1:
    """Inception-ResNet-v1 with FaceNet's 512-d bottleneck (23.5 M parameters). Weights come from a local file
    (``backbone.weights=PATH``), never from the network."""
    if pretrained:
        raise ValueError(
            "inception_resnet_v1 downloads no weights: set backbone.pretrained=false and backbone.weights=<a local "
            "state dict, e.g. timesler's 20180402-114759-vggface2.pt>"
        )
    return InceptionResnetV1(**kwargs)
