"""The FaceNet embedding network: timm backbone -> linear projection -> L2 normalisation."""

from __future__ import annotations

import difflib
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

import facenet_pl.models.dlib_resnet  # noqa: F401  (registers dlib_resnet with timm)
import facenet_pl.models.inception_resnet_v1  # noqa: F401  (registers inception_resnet_v1 with timm)
import facenet_pl.models.small_cnn  # noqa: F401  (registers facenet_small with timm)
from facenet_pl.utils.errors import ConfigError
from facenet_pl.utils.settings import ModelSettings


def create_backbone(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, num_classes=0)`` with clear errors for unknown names and offline weights."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ConfigError(
            f"backbone.name={name!r} is not a timm model.{hint} "
            "Use a config from conf/backbone/ (backbone=inception|inception_resnet_v1|inception_resnet_v2|resnet18|"
            "resnet50|mobilenetv3|small|dlib_resnet) or any name from timm.list_models()."
        )
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except TypeError as e:
        if kwargs and "unexpected keyword argument" in str(e):  # e.g. backbone=small's widths on another model
            raise ConfigError(
                f"backbone.kwargs {dict(kwargs)} do not fit {name!r} ({e}). They come from the backbone config "
                f"(the default backbone=small sets widths): start from a config without them, e.g. "
                f"backbone=resnet18 backbone.name={name}, or drop them with ~backbone.kwargs.<key>."
            ) from None
        raise
    except Exception as e:  # weights need the network; say so instead of a deep traceback
        if pretrained:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise ConfigError(
                f"backbone.pretrained=true: could not load pretrained weights for {name!r} ({type(e).__name__}: "
                f"{first}). Downloading them needs the network (Hugging Face Hub) or a filled local cache; with a "
                "weights file at hand pass +backbone.kwargs.pretrained_cfg_overlay.file=<path>, or set "
                "backbone.pretrained=false to train from scratch."
            ) from e
        raise


#: ``model.head``: ``linear`` projects the backbone's output to ``embedding_dim``; ``none`` takes the backbone's
#: output as the embedding (a network trained with its own bottleneck, e.g. inception_resnet_v1's 512-d).
HEADS = ("linear", "none")


class FaceNetEmbedding(nn.Module):
    """Maps images (N, 3, H, W) to unit vectors (N, embedding_dim): f(x) on the hypersphere."""

    def __init__(
        self,
        backbone: str = "facenet_small",
        embedding_dim: int = ModelSettings.embedding_dim,
        pretrained: bool = False,
        dropout: float = ModelSettings.dropout,
        backbone_kwargs: dict[str, Any] | None = None,
        head: str = ModelSettings.head,
    ) -> None:
        super().__init__()
        if int(embedding_dim) < 1:
            raise ValueError(f"model.embedding_dim must be >= 1, got {embedding_dim}")
        if head not in HEADS:
            raise ConfigError(f"model.head={head!r}: expected one of {', '.join(HEADS)}")
        self.backbone = create_backbone(backbone, pretrained=pretrained, **dict(backbone_kwargs or {}))
        self.dropout = nn.Dropout(dropout)
        # With num_classes=0 some timm models (MobileNetV3, EfficientNet-Lite, ...) keep a pre-logits layer that
        # widens the pooled features: head_hidden_size is then the real output width, num_features is not.
        width = int(getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features)
        if head == "none" and width != int(embedding_dim):
            raise ConfigError(
                f"model.head=none takes {backbone}'s {width}-d output as the embedding: set "
                f"model.embedding_dim={width}, or model.head=linear to project it to {embedding_dim}"
            )
        self.head = nn.Linear(width, int(embedding_dim)) if head == "linear" else nn.Identity()
        self.embedding_dim = int(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        return F.normalize(self.head(self.dropout(feats)).float(), p=2, dim=1)


def compile_network(net: nn.Module, setting: bool | str) -> nn.Module:
    """``model.compile``: ``torch.compile`` the network, true for inductor or a backend's name (eager, aot_eager:
    to tell a compiler problem from a model problem); an unknown name is one line listing the backends."""
    backend = setting if isinstance(setting, str) else "inductor"
    backends = torch._dynamo.list_backends(exclude_tags=())
    if backend not in backends:
        raise ConfigError(
            f"model.compile={backend!r}: not a torch.compile backend (true for inductor, or one of "
            f"{', '.join(backends)})"
        )
    return torch.compile(net, backend=backend)
