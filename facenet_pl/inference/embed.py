"""Embedding images with a trained model: batches, test-time flip averaging, checkpoint loading."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from facenet_pl.data.datasets import collate_batch
from facenet_pl.training.module import FaceNetModule


def load_model(path: str | Path, device: str | torch.device = "cpu") -> FaceNetModule:
    """Rebuild a trained model from a checkpoint (``.ckpt``) or shared weights (``.safetensors``) alone.

    Never runs code from the file: see :mod:`facenet_pl.inference.model_files`.
    """
    from facenet_pl.inference.model_files import load_model_file

    return load_model_file(path).to(device).eval()


@torch.no_grad()
def embed_images(module: FaceNetModule, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """uint8 [0, 255] images (N, 3, H, W) -> unit embeddings; ``flip`` averages with the mirror image."""
    return module.embed(images, flip=flip)  # one flip-averaging code path: the module's


@torch.no_grad()
def embed_dataset(
    module: FaceNetModule,
    dataset: Dataset,
    batch_size: int = 256,
    flip: bool = False,
    num_workers: int = 0,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Embeddings of every item of a dataset yielding (uint8 images, labels, indices), in order.

    ``transform`` maps each uint8 batch before embedding (e.g. a test-time
    :class:`~facenet_pl.evaluation.degrade.Degradation`).
    """
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_batch)
    out = [embed_images(module, transform(images) if transform else images, flip).cpu() for images, _, _ in loader]
    return torch.cat(out) if out else torch.empty(0, module.net.embedding_dim)
