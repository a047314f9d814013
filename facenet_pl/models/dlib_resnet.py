"""``dlib_resnet``: the ResNet of dlib's face-recognition model (``dlib_face_recognition_resnet_model_v1.dat``).

A 29-convolution ResNet on 150 px chips (dlib's ``dnn_face_recognition_ex.cpp``): a 7 x 7 / 2 convolution (32),
a 3 x 3 / 2 max-pool, residual blocks of two 3 x 3 convolutions (3 x 32, then down + 3 x 64, down + 2 x 128,
down + 2 x 256, down 256), a global mean and a 256 -> 128 linear map without bias. Each convolution is followed
by a per-channel affine map (dlib's ``affine``: the BatchNorm it was trained with, frozen). Its input is
``model.normalization=dlib``: (RGB - dlib's channel means) / 256. Two details of dlib
are kept exactly, since the weights depend on them:

- every stride-2 convolution and pooling pads nothing (150 -> 72 -> 35 -> 17 -> 8 -> 3 -> 1);
- a down block's shortcut is a 2 x 2 / 2 average pool of its input, and dlib's ``add_prev`` adds two tensors of
  different shapes by zero-filling the smaller one, anchored top-left: more channels on one side (a wider
  block) or a larger map (3 x 3 meets the 4 x 4 pooled shortcut, 1 x 1 meets 2 x 2).

Registered with timm like ``inception_resnet_v1``: ``forward_features`` is the 256-channel map, the head the mean
and the 128-d linear map (``head_hidden_size`` 128: ``model.head=none`` takes it as the embedding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

#: (width, down) of each residual block, in forward order.
BLOCKS: tuple[tuple[int, bool], ...] = (
    *((32, False),) * 3,
    (64, True),
    *((64, False),) * 3,
    (128, True),
    *((128, False),) * 2,
    (256, True),
    *((256, False),) * 2,
    (256, True),
)


class Affine(nn.Module):
    """Per-channel ``gamma * x + beta`` (dlib's ``affine`` layer in CONV mode)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger of the two shapes, each input zero-filled to it, top-left."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class DlibBlock(nn.Module):
    """conv 3 x 3 (stride 2 and no padding when ``down``) -> affine -> ReLU -> conv 3 x 3 -> affine, plus the
    input (average-pooled 2 x 2 / 2 when ``down``) through :func:`add_prev`, then ReLU."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.affine1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.affine2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_prev(y, shortcut))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet (5.6 M parameters); 150 px input, 128-d output (not normalised here)."""

    def __init__(self, num_classes: int = 0, in_chans: int = 3, embedding: int = 128, **_: object) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 32, 7, stride=2)
        self.affine1 = Affine(32)
        blocks, width = [], 32
        for out, down in BLOCKS:
            blocks.append(DlibBlock(width, out, down))
            width = out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, embedding, bias=False)
        self.num_features, self.head_hidden_size = width, embedding
        self.num_classes = num_classes
        self.classifier = nn.Linear(embedding, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.affine1(self.conv1(x))), 3, 2)
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.fc(x.mean((2, 3)))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()


@register_model
def dlib_resnet(pretrained: bool = False, **kwargs) -> DlibResNet:
    """dlib's face-recognition ResNet. Its trained weights come from ``facenet-pl import-weights dlib`` (read from
    the installed ``face-recognition-models`` package), never from the network."""
    if pretrained:
        raise ValueError(
            "dlib_resnet downloads no weights: set backbone.pretrained=false and start from the model file "
            "`facenet-pl import-weights dlib -o dlib.safetensors` writes (model.init_from=dlib.safetensors)"
        )
    return DlibResNet(**kwargs)
