"""Face detection and alignment: photos in, aligned face crops out (``facenet-pl align``, ``data.align``)."""

from facenet_pl.data.align.detect import Face, MTCNNDetector, choose_face
from facenet_pl.data.align.folder import NO_FACE_MODES, align_folder, align_images, crop_names
from facenet_pl.data.align.templates import ARCFACE_112, DEFAULT_SIZE, TEMPLATES, arcface_crop, arcface_points, box_crop

__all__ = [
    "ARCFACE_112",
    "DEFAULT_SIZE",
    "NO_FACE_MODES",
    "TEMPLATES",
    "Face",
    "MTCNNDetector",
    "align_folder",
    "align_images",
    "arcface_crop",
    "arcface_points",
    "box_crop",
    "choose_face",
    "crop_names",
]
