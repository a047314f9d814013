"""Face detection with five landmarks: MTCNN (Zhang et al. 2016), as facenet-pytorch ships it.

Why this detector: ``facenet-pytorch`` 2.5.x carries MTCNN's three networks (``pnet.pt``, ``rnet.pt``,
``onet.pt``) inside its wheel, so nothing is downloaded at run time, and its requirements are loose (2.6 pins
torch < 2.3, hence the ``<2.6`` pin in ``facenet-pl[align]``). It is the detector davidsandberg/facenet and
timesler/facenet-pytorch align their FaceNet training and LFW data with, and its five landmarks feed
insightface's template alignment.

Photos are detected in batches of equal size (MTCNN's pyramid needs one shape per batch), on the CPU or a
GPU; a photo larger than ``max_side`` is detected on a reduced copy (boxes and landmarks are scaled back),
which keeps a 12-megapixel phone photo from costing seconds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facenet_pl.utils.errors import ConfigError


@dataclass
class Face:
    """One detected face: box (x1, y1, x2, y2), five landmarks (5, 2) in image pixels (left eye, right eye,
    nose tip, left and right mouth corner, as seen in the image), detection probability."""

    box: np.ndarray
    landmarks: np.ndarray
    prob: float


def choose_face(faces: Sequence[Face], shape: tuple[int, ...]) -> Face:
    """The face to keep when a photo has several: davidsandberg/facenet's rule, the largest box area minus twice
    the squared distance of its centre from the image centre (large and central wins)."""
    h, w = shape[:2]
    boxes = np.stack([f.box for f in faces])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    offset = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 - w / 2, (boxes[:, 1] + boxes[:, 3]) / 2 - h / 2])
    return faces[int(np.argmax(area - 2.0 * (offset**2).sum(0)))]


def _mtcnn_class():
    try:
        from facenet_pytorch import MTCNN
    except ImportError:
        raise ConfigError(
            "face alignment needs facenet-pytorch's MTCNN: pip install 'facenet-pl[align]' "
            "(facenet-pytorch>=2.5.3,<2.6, whose wheel holds the detector weights)"
        ) from None
    return MTCNN


def resolve_device(device: str) -> str:
    """``auto``: ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"align device {device!r}: no CUDA GPU is visible; use --device cpu")
    return device


class MTCNNDetector:
    """Batched MTCNN: a list of RGB uint8 (H, W, 3) photos -> a list of the faces found in each."""

    def __init__(
        self, device: str = "cpu", min_face_size: int = 20, max_side: int = 1280, batch_pixels: int = 8_000_000
    ) -> None:
        mtcnn = _mtcnn_class()
        self.device = resolve_device(device)
        self.max_side, self.batch_pixels, self.min_face_size = int(max_side), int(batch_pixels), int(min_face_size)
        # keep_all: every face, so the choice (and the count of photos with several) is ours
        self.mtcnn = mtcnn(keep_all=True, min_face_size=int(min_face_size), device=self.device).eval()

    def _reduced(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = rgb.shape[:2]
        if max(h, w) <= self.max_side:
            return rgb, 1.0
        import cv2

        s = self.max_side / max(h, w)
        return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), s

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """The faces of each photo (an empty list where none was found)."""
        import torch

        reduced = [self._reduced(im) for im in images]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (im, _) in enumerate(reduced):
            if min(im.shape[:2]) >= self.min_face_size:  # a smaller photo cannot hold a face MTCNN looks for
                groups[im.shape].append(i)
        out: list[list[Face]] = [[] for _ in images]
        batches = []
        for shape, idx in groups.items():  # MTCNN's pyramid of a batch scales with its pixels: bound them
            step = max(1, self.batch_pixels // (shape[0] * shape[1]))
            batches += [idx[k : k + step] for k in range(0, len(idx), step)]
        for idx in batches:
            batch = np.stack([reduced[i][0] for i in idx])
            with torch.inference_mode():
                boxes, probs, points = self.mtcnn.detect(batch, landmarks=True)
            for j, i in enumerate(idx):
                if boxes[j] is None:
                    continue
                s = reduced[i][1]
                out[i] = [
                    Face(np.asarray(b, np.float64) / s, np.asarray(p, np.float64) / s, float(q))
                    for b, p, q in zip(boxes[j], points[j], probs[j])
                ]
        return out
