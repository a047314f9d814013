"""``facenet-pl align SRC DST`` and ``data.align``: every photo of a folder -> one aligned face crop (PNG).

Per photo: MTCNN finds the faces and their five landmarks (:mod:`facenet_pl.data.align.detect`); with several, the
large central one is kept (and the photo counted); the crop is made by the template (:mod:`.templates`). Photos
are read and detected in chunks of ``batch_size`` by ``workers`` processes (one torch thread each) or, on a GPU,
by one process. Crops already in ``dst`` are kept, so an interrupted run continues where it stopped; each is
written to a temporary name and renamed, so a kill leaves no half-written crop. ``dst/align_report.json`` counts
the photos aligned, with several faces, without a face, unreadable (and lists the last two kinds).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from facenet_pl.data.align.detect import MTCNNDetector, _mtcnn_class, choose_face, resolve_device
from facenet_pl.data.align.templates import DEFAULT_SIZE, LANDMARK_TEMPLATES, arcface_crop, box_crop, check_template
from facenet_pl.utils.errors import ConfigError
from facenet_pl.utils.fileio import write_text_atomic

log = logging.getLogger(__name__)

NO_FACE_MODES = ("skip", "center")
#: Suffixes a crop's name replaces with ``.png``; any other name keeps its whole name and gets ``.png`` added
#: (``subject01.happy`` -> ``subject01.happy.png``), so distinct photos never share a crop.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pnm"}
)


def crop_names(relative: Sequence[Path]) -> list[Path]:
    """The crop's relative path for each photo's relative path: ``a.jpg`` -> ``a.png``, ``s01.happy`` ->
    ``s01.happy.png``; photos whose crops would share a name (``a.jpg``, ``a.png``) keep their full names
    (``a.jpg.png``, ``a.png.png``). One crop per photo, whatever the names."""
    rel = [Path(p) for p in relative]
    first = [p.with_suffix(".png") if p.suffix.lower() in IMAGE_SUFFIXES else p.with_name(p.name + ".png") for p in rel]
    clash = Counter(first)
    names = [f if clash[f] == 1 else p.with_name(p.name + ".png") for p, f in zip(rel, first)]
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise ConfigError(f"photos whose crops would share the name {dup[0]}: rename one of them")
    return names


def _save_png(out: np.ndarray, dst: Path) -> None:
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    Image.fromarray(out).save(tmp, format="PNG")
    tmp.replace(dst)  # a killed run leaves no half-written crop behind


def _geometry(template: str, face, shape: tuple[int, ...]) -> np.ndarray:
    """The face's landmarks (arcface) or box (box) relative to the image width and height: the median over a run
    places the crop of a photo without a detectable face (``no_face="center"``)."""
    h, w = shape[:2]
    if template in LANDMARK_TEMPLATES:
        return face.landmarks / np.array([w, h])
    return np.asarray(face.box[:4], np.float64) / np.array([w, h, w, h])


def _crop(template: str, rgb: np.ndarray, size: int, margin: int, landmarks=None, box=None) -> np.ndarray:
    if template in LANDMARK_TEMPLATES:
        return arcface_crop(rgb, landmarks, size, template)
    return box_crop(rgb, box, size, margin)


class _Worker:
    """Reads, detects, crops and writes one chunk of photos (in a pool process or in the caller's)."""

    def __init__(self, template: str, size: int, margin: int, device: str, max_side: int, min_face: int) -> None:
        self.template, self.size, self.margin = template, size, margin
        self.detector = MTCNNDetector(device, min_face_size=min_face, max_side=max_side)

    def __call__(self, jobs: Sequence[tuple[str, str]]) -> list[tuple[str, int, np.ndarray | None]]:
        """(status, faces found, relative geometry of the kept face) per job: ``aligned``, ``no_face``,
        ``unreadable``."""
        from facenet_pl.data.images import load_rgb

        images = [load_rgb(src) for src, _ in jobs]
        readable = [i for i, im in enumerate(images) if im is not None]
        found = self.detector.detect([images[i] for i in readable])
        out: list[tuple[str, int, np.ndarray | None]] = [("unreadable", 0, None)] * len(jobs)
        for i, faces in zip(readable, found):
            if not faces:
                out[i] = ("no_face", 0, None)
                continue
            rgb, face = images[i], choose_face(faces, images[i].shape)
            crop = _crop(self.template, rgb, self.size, self.margin, face.landmarks, face.box)
            _save_png(crop, Path(jobs[i][1]))
            out[i] = ("aligned", len(faces), _geometry(self.template, face, rgb.shape))
        return out


_WORKER: _Worker | None = None


def _die_with(parent: int) -> None:
    """Make this pool process end when ``parent`` does, however it ends (``kill -9`` included): Linux's parent-death
    signal, and a check that the parent did not die before it was set. Elsewhere the pool's own shutdown applies."""
    import os
    import signal
    import sys

    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def _init_worker(parent: int, *args) -> None:
    global _WORKER
    import torch

    _die_with(parent)
    torch.set_num_threads(1)  # one process per core
    _WORKER = _Worker(*args)


def _run_chunk(jobs):
    return _WORKER(jobs)


def _centre_crop(template: str, rgb: np.ndarray, size: int, margin: int, geometry: np.ndarray) -> np.ndarray:
    """The crop of a photo without a detected face at the run's median face geometry (relative to the photo)."""
    h, w = rgb.shape[:2]
    if template in LANDMARK_TEMPLATES:
        return arcface_crop(rgb, geometry * np.array([w, h]), size, template)
    return box_crop(rgb, geometry * np.array([w, h, w, h]), size, margin)


#: A face-sized placement for runs that found no face at all: the template's own geometry on the whole photo.
def _default_geometry(template: str) -> np.ndarray:
    from facenet_pl.data.align.templates import arcface_points

    if template in LANDMARK_TEMPLATES:
        return arcface_points(1, template)  # the template scaled to the photo: the face fills it as in a crop
    return np.array([0.2, 0.2, 0.8, 0.8])


def align_images(
    paths: Sequence[Path], template: str, size: int, margin: int = 32, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Detect and crop the face of each photo in memory, as :func:`align_folder` would write it: uint8
    (N, 3, size, size) crops and a mask of the photos where a face was found (unreadable or faceless: False)."""
    from facenet_pl.data.images import load_rgb

    check_template(template, size, margin)
    detector = MTCNNDetector(resolve_device(device))
    out = np.zeros((len(paths), 3, size, size), np.uint8)
    ok = np.zeros(len(paths), bool)
    for start in range(0, len(paths), 16):
        chunk = list(range(start, min(start + 16, len(paths))))
        images = {i: load_rgb(paths[i]) for i in chunk}
        readable = [i for i in chunk if images[i] is not None]
        for i, faces in zip(readable, detector.detect([images[i] for i in readable])):
            if faces:
                face = choose_face(faces, images[i].shape)
                out[i] = _crop(template, images[i], size, margin, face.landmarks, face.box).transpose(2, 0, 1)
                ok[i] = True
    return out, ok


def align_folder(
    src: str | Path,
    dst: str | Path,
    template: str = "arcface",
    size: int | None = None,
    margin: int = 32,
    workers: int = 1,
    batch_size: int = 32,
    device: str = "cpu",
    force: bool = False,
    files: Sequence[Path] | None = None,
    no_face: str = "skip",
    max_side: int = 1280,
    min_face: int = 20,
) -> dict:
    """Align every photo under ``src`` (or the given ``files`` under it) into ``dst``; returns the report.

    ``template``: ``arcface`` (five-point similarity alignment, ``size`` 112 by default) or ``box`` (the detector's
    box + ``margin`` px, ``size`` 160). A photo without a detectable face is skipped (``no_face="skip"``) or, with
    ``"center"``, cropped at the median face placement of this run (for data sets whose faces are centred, such
    as LFW, so every file a protocol names exists). ``device``: ``cpu``, ``cuda`` or ``auto``.
    """
    size = int(size or DEFAULT_SIZE.get(template, 112))
    check_template(template, size, margin)
    if no_face not in NO_FACE_MODES:
        raise ConfigError(f"no_face={no_face!r}: expected one of {NO_FACE_MODES}")
    if int(workers) < 1 or int(batch_size) < 1:
        raise ConfigError(f"align workers and batch size must be >= 1, got {workers} and {batch_size}")
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not src.is_dir():
        raise ConfigError(f"{src} is not a folder of images")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ConfigError(f"the output folder {dst} must not be the input folder {src} or inside it")
    _mtcnn_class()  # fail early without facenet-pytorch
    device = resolve_device(device)
    settings = {"detector": "mtcnn", "template": template, "size": size, "margin": margin if template == "box" else 0}
    previous = _previous_report(dst)
    if previous is not None and not force:
        made = {k: previous.get(k) for k in settings}
        if made != settings:
            raise ConfigError(
                f"{dst} holds crops made with {made}, not {settings}: mixing them would give one data set two "
                "geometries. Use another output folder, or --force to redo every crop"
            )
    if files is None:  # any layout is mirrored; hidden files and folders are left out
        files = [
            p
            for p in src.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts)
        ]
    files = sorted(Path(p) for p in files)
    names = crop_names([p.relative_to(src) for p in files])
    jobs, kept = [], 0
    for p, name in zip(files, names):
        out = dst / name
        if out.exists() and not force:
            kept += 1
            continue
        jobs.append((str(p), str(out)))

    if jobs and (previous is None or force):  # the geometry is on record before the first crop: a run killed
        dst.mkdir(parents=True, exist_ok=True)  # early cannot be continued with another template or size
        write_text_atomic(dst / "align_report.json", json.dumps({"source": str(src), **settings, "complete": False}))
    t0 = time.perf_counter()
    results = _run(jobs, (template, size, margin, device, max_side, min_face), workers, batch_size, device)
    counts: Counter = Counter(status for status, _, _ in results)
    geometries = [g for _, _, g in results if g is not None]
    if geometries:
        median = np.median(np.stack(geometries), axis=0)
    elif previous is not None and previous.get("median_geometry") is not None:
        median = np.asarray(previous["median_geometry"], np.float64)
    else:
        median = _default_geometry(template)
    listed: dict[str, list[str]] = {"no_face": [], "unreadable": []}
    several, centred = [], []
    for (s, d), (status, n_faces, _) in zip(jobs, results):
        rel = str(Path(s).relative_to(src))
        if n_faces > 1:
            several.append(rel)
        if status == "no_face" and no_face == "center":
            from facenet_pl.data.images import load_rgb

            _save_png(_centre_crop(template, load_rgb(s), size, margin, median), Path(d))
            centred.append(rel)
        if status in listed:
            listed[status].append(rel)
    dst.mkdir(parents=True, exist_ok=True)
    report = {
        "source": str(src),
        **settings,
        "complete": True,
        "device": device,
        "photos": len(files),
        "aligned": counts["aligned"],
        "several_faces": len(several),
        "already_there": kept,
        "no_face": counts["no_face"],
        "unreadable": counts["unreadable"],
        "centered": len(centred),
        "seconds": round(time.perf_counter() - t0, 1),
        "median_geometry": median.tolist(),
        "skipped_files": {k: v for k, v in listed.items()}
        if no_face == "skip"
        else {"unreadable": listed["unreadable"]},
        "centered_files": centred,
        "several_faces_files": several,
    }
    write_text_atomic(dst / "align_report.json", json.dumps(report, indent=1))
    return report


def _previous_report(dst: Path) -> dict | None:
    path = dst / "align_report.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def _run(jobs, worker_args, workers: int, batch_size: int, device: str) -> list:
    """Every job's result, in order; progress is logged every 30 s."""
    chunks = [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    results: list = []
    last = start = time.perf_counter()

    def progress():
        nonlocal last
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            rate = len(results) / max(last - start, 1e-9)
            log.info("aligned %d of %d photos (%.1f/s)", len(results), len(jobs), rate)

    if not chunks:
        return results
    if workers > 1 and not device.startswith("cuda"):  # a GPU is driven by one process
        import multiprocessing as mp
        import os

        with ProcessPoolExecutor(workers, mp.get_context("spawn"), _init_worker, (os.getpid(), *worker_args)) as pool:
            for part in pool.map(_run_chunk, chunks):
                results += part
                progress()
        return results
    worker = _Worker(*worker_args)
    for chunk in chunks:
        results += worker(chunk)
        progress()
    return results
