"""Face detection and alignment: photos in, square face crops out (``facenet-pl align SRC DST``, ``data.align``).

The detector is OpenCV's Viola-Jones cascade (``haarcascade_frontalface_default``) with its eye cascade for the
eye line. Why this one: its model files ship inside the ``opencv-python-headless`` 4.x wheel (``cv2.data``), so
nothing is downloaded at run time, and OpenCV is maintained and installs beside any torch. The alternatives
either download weights on first use (RetinaFace, YuNet, InsightFace, MediaPipe Tasks), no longer bundle them
(MediaPipe >= 1.0 and OpenCV 5 wheels), or pin an old torch (facenet-pytorch's MTCNN, torch < 2.3).
It finds frontal and near-frontal faces; profile faces are reported as "no face".

Per image: the largest face is taken; if both eyes are found in the upper half of the face box, the image is
rotated about the face centre so the eye line is level; then a square of the face box's side x (1 + margin),
centred on the face, is cut (black where it leaves the image) and resized to ``size``.

A photo without a detectable face is skipped (``no_face="skip"``, the default) or, with ``no_face="center"``,
cropped around its centre with a face box of the median relative size found in the same run (for data sets
whose faces are centred, such as LFW, so that every file named by a protocol file still exists).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet_pl.errors import ConfigError

log = logging.getLogger(__name__)


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ConfigError(
            "face alignment needs OpenCV: pip install 'facenet-pl[align]' "
            "(opencv-python-headless < 5, whose wheel holds the detector files)"
        ) from None
    if not (Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml").is_file():
        raise ConfigError(
            f"OpenCV {cv2.__version__} has no bundled face cascade (OpenCV 5 wheels dropped them): "
            "pip install 'opencv-python-headless>=4.8,<5'"
        )
    return cv2


@dataclass
class Detection:
    """The largest face box (x, y, w, h) in pixels and the eye centres (left, right in the image) if found."""

    box: tuple[int, int, int, int]
    eyes: tuple[tuple[float, float], tuple[float, float]] | None


class FaceAligner:
    """Detect the largest face in an RGB uint8 (H, W, 3) image and return an aligned square crop."""

    def __init__(self, size: int = 160, margin: float = 0.2, min_face: float = 0.1) -> None:
        if size < 16:
            raise ConfigError(f"align size must be >= 16 px, got {size}")
        if not 0 <= margin <= 2:
            raise ConfigError(f"align margin must be in [0, 2] (a fraction of the face box), got {margin}")
        cv2 = _cv2()
        self.size, self.margin, self.min_face = int(size), float(margin), float(min_face)
        self._faces = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
        self._eyes = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_eye.xml"))

    def detect(self, rgb: np.ndarray) -> Detection | None:
        cv2 = _cv2()
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        side = max(16, int(self.min_face * min(gray.shape)))
        faces = self._faces.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
        if len(faces) == 0:
            return None
        x, y, w, h = (int(v) for v in max(faces, key=lambda r: int(r[2]) * int(r[3])))
        top = gray[y : y + int(h * 0.55), x : x + w]  # eyes sit in the upper half of the box
        eyes = self._eyes.detectMultiScale(top, scaleFactor=1.1, minNeighbors=5, minSize=(max(4, w // 10),) * 2)
        found = None
        if len(eyes) >= 2:
            centres = sorted(((ex + ew / 2 + x, ey + eh / 2 + y) for ex, ey, ew, eh in eyes), key=lambda c: c[0])
            left = [c for c in centres if c[0] < x + w / 2]
            right = [c for c in centres if c[0] >= x + w / 2]
            if left and right:
                found = (left[-1], right[0])
        return Detection((x, y, w, h), found)

    def crop(self, rgb: np.ndarray, det: Detection) -> np.ndarray:
        """The aligned, margin-padded square crop of ``det`` from ``rgb``, resized to ``size`` x ``size``."""
        cv2 = _cv2()
        x, y, w, h = det.box
        cx, cy = x + w / 2, y + h / 2
        angle = 0.0
        if det.eyes is not None:
            (lx, ly), (rx, ry) = det.eyes
            angle = math.degrees(math.atan2(ry - ly, rx - lx))
        side = max(w, h) * (1 + self.margin)
        scale = self.size / side
        # One affine warp: rotate about the face centre (eyes level), scale to size, move the centre to the middle.
        m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
        m[0, 2] += self.size / 2 - cx
        m[1, 2] += self.size / 2 - cy
        return cv2.warpAffine(
            rgb,
            m,
            (self.size, self.size),
            flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        det = self.detect(rgb)
        return None if det is None else self.crop(rgb, det)


def _read_rgb(path: Path) -> np.ndarray | None:
    from facenet_pl.data.images import load_rgb

    return load_rgb(path)


_ALIGNER: FaceAligner | None = None


def _init(size: int, margin: float) -> None:
    global _ALIGNER
    _ALIGNER = FaceAligner(size, margin)


def _save_png(out: np.ndarray, dst: Path) -> None:
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    Image.fromarray(out).save(tmp, format="PNG")
    tmp.replace(dst)  # a killed run leaves no half-written crop behind


def _align_one(job: tuple[str, str]) -> tuple[str, float | None, bool]:
    """(status, face box side / shorter image side, eyes found and levelled) for one photo; the crop is written
    for "aligned"."""
    src, dst = Path(job[0]), Path(job[1])
    rgb = _read_rgb(src)
    if rgb is None:
        return "unreadable", None, False
    det = _ALIGNER.detect(rgb)
    if det is None:
        return "no_face", None, False
    _save_png(_ALIGNER.crop(rgb, det), dst)
    return "aligned", max(det.box[2], det.box[3]) / min(rgb.shape[:2]), det.eyes is not None


def centre_detection(shape: tuple[int, ...], relative_side: float) -> Detection:
    """A square face box of ``relative_side`` x the shorter image side, centred in an image of ``shape``."""
    h, w = shape[:2]
    side = max(1, round(relative_side * min(h, w)))
    return Detection(((w - side) // 2, (h - side) // 2, side, side), None)


NO_FACE_MODES = ("skip", "center")


def align_folder(
    src: str | Path,
    dst: str | Path,
    size: int = 160,
    margin: float = 0.2,
    workers: int = 1,
    force: bool = False,
    files: Sequence[Path] | None = None,
    no_face: str = "skip",
) -> dict:
    """Align every image under ``src`` into ``dst`` (same relative paths, ``.png``); returns the counts.

    Crops already in ``dst`` are kept (an interrupted run continues where it stopped) unless ``force``.
    Unreadable files are skipped; images without a detectable face are skipped (``no_face="skip"``) or cropped
    around the image centre (``"center"``: a box of the median relative face size of this run's detections,
    0.5 of the shorter side if there were none). Both are listed in ``dst/align_report.json``.
    """
    if no_face not in NO_FACE_MODES:
        raise ConfigError(f"no_face={no_face!r}: expected one of {NO_FACE_MODES}")
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not src.is_dir():
        raise ConfigError(f"{src} is not a folder of images")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ConfigError(f"the output folder {dst} must not be the input folder {src} or inside it")
    FaceAligner(size, margin)  # fail early on bad settings / missing OpenCV
    paths = (
        sorted(files)
        if files is not None
        else sorted(
            p
            for p in src.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts)
        )
    )
    jobs, kept = [], 0
    for p in paths:
        out = (dst / p.relative_to(src)).with_suffix(".png")
        if out.exists() and not force:
            kept += 1
            continue
        jobs.append((str(p), str(out)))
    counts: Counter = Counter()
    skipped: dict[str, list[str]] = {"no_face": [], "unreadable": []}
    centred: list[str] = []
    relative_side = None
    if jobs:
        if workers > 1:
            with ProcessPoolExecutor(workers, initializer=_init, initargs=(size, margin)) as pool:
                results = list(pool.map(_align_one, jobs, chunksize=16))
        else:
            _init(size, margin)
            results = [_align_one(j) for j in jobs]
        sides = [side for _, side, _ in results if side is not None]
        counts["levelled"] = sum(levelled for _, _, levelled in results)
        relative_side = float(np.median(sides)) if sides else 0.5
        aligner = FaceAligner(size, margin) if no_face == "center" else None
        for (s, d), (r, _, _) in zip(jobs, results):
            rel = str(Path(s).relative_to(src))
            if r == "no_face" and aligner is not None:
                rgb = _read_rgb(Path(s))
                _save_png(aligner.crop(rgb, centre_detection(rgb.shape, relative_side)), Path(d))
                centred.append(rel)
                r = "centered"
            counts[r] += 1
            if r in skipped:
                skipped[r].append(rel)
    dst.mkdir(parents=True, exist_ok=True)
    report = {
        "source": str(src),
        "size": size,
        "margin": margin,
        "aligned": counts["aligned"],
        "levelled": counts["levelled"],
        "already_there": kept,
        "no_face": counts["no_face"],
        "unreadable": counts["unreadable"],
        "centered": counts["centered"],
        "median_face_side": relative_side,
        "skipped_files": skipped,
        "centered_files": centred,
    }
    (dst / "align_report.json").write_text(json.dumps(report, indent=1))
    return report
