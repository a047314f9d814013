"""dlib's own face pipeline on the photos of an LFW pairs file: the reference row for ``backbone=dlib_resnet``.

Runs where dlib is installed (``pip install dlib-bin face-recognition-models``; no facenet-pl needed): HOG
detector (upsampled once), 5-point shape predictor, ``get_face_chip(img, shape, size=150, padding=0.25)``,
``face_recognition_model_v1.compute_face_descriptor`` on the chip. A photo where HOG finds no face gets the
detection of the fixed box LFW centres its faces in (counted). Writes an ``.npz`` with, per photo of the pairs
file: the descriptor (unnormalised, as dlib returns it), whether HOG found the face, the five shape points and
the affine map from chip pixels to photo pixels (measured by extracting chips of coordinate planes, so the
``--template dlib`` fit uses dlib's own geometry). ``benchmarks/bench_trained_models.py`` scores it.

    python benchmarks/dlib_reference.py --root LFW_ROOT --pairs pairs.txt --models DIR -o dlib_lfw.npz
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

#: LFW's 250 x 250 photos centre the face: dlib's box for a photo where HOG finds none.
LFW_CENTRE_BOX = (67, 67, 182, 182)


def pair_files(pairs: Path) -> list[str]:
    """Relative paths (Name/Name_000N.jpg) of every photo an LFW pairs file names, in first-seen order."""
    seen: dict[str, None] = {}
    for line in pairs.read_text().splitlines()[1:]:
        f = line.split()
        if len(f) == 3:
            names = [(f[0], f[1]), (f[0], f[2])]
        elif len(f) == 4:
            names = [(f[0], f[1]), (f[2], f[3])]
        else:
            continue
        for n, k in names:
            seen.setdefault(f"{n}/{n}_{int(k):04d}.jpg")
    return list(seen)


def chip_to_image(dlib, chip_details, h: int, w: int) -> np.ndarray:
    """The 2 x 3 affine map from chip pixel (x, y) to photo pixel, fit to chips of the x and y coordinate planes."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cx = dlib.extract_image_chip(np.ascontiguousarray(xx + 1.0), chip_details)  # +1: 0 marks outside the photo
    cy = dlib.extract_image_chip(np.ascontiguousarray(yy + 1.0), chip_details)
    r, c = np.mgrid[0 : cx.shape[0], 0 : cx.shape[1]]
    inside = (cx >= 1.5) & (cy >= 1.5) & (cx <= w - 0.5) & (cy <= h - 0.5)
    a = np.stack([c[inside], r[inside], np.ones(inside.sum())], 1).astype(np.float64)
    sol, *_ = np.linalg.lstsq(a, np.stack([cx[inside] - 1.0, cy[inside] - 1.0], 1), rcond=None)
    return sol.T  # (2, 3)


def main() -> None:
    import dlib

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="LFW photos: ROOT/Name/Name_000N.jpg")
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--models", required=True, help="face_recognition_models/models (the .dat files)")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    models = Path(a.models)
    detector = dlib.get_frontal_face_detector()
    shape5 = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    files = pair_files(Path(a.pairs))
    desc = np.zeros((len(files), 128), np.float32)
    found = np.zeros(len(files), bool)
    points = np.zeros((len(files), 5, 2), np.float64)
    maps = np.zeros((len(files), 2, 3), np.float64)
    t0 = time.time()
    for i, rel in enumerate(files):
        img = dlib.load_rgb_image(str(Path(a.root) / rel))
        h, w = img.shape[:2]
        dets = detector(img, 1)
        found[i] = len(dets) > 0
        if found[i]:  # the face nearest the centre (LFW names the centred person)
            det = min(dets, key=lambda d: (d.center().x - w / 2) ** 2 + (d.center().y - h / 2) ** 2)
        else:
            det = dlib.rectangle(*LFW_CENTRE_BOX)
        shape = shape5(img, det)
        points[i] = [(p.x, p.y) for p in shape.parts()]
        chip = dlib.get_face_chip(img, shape, size=150, padding=0.25)
        desc[i] = np.asarray(net.compute_face_descriptor(chip), np.float32)
        maps[i] = chip_to_image(dlib, dlib.get_face_chip_details(shape, size=150, padding=0.25), h, w)
        if (i + 1) % 500 == 0:
            print(f"{i + 1} of {len(files)} photos, {(i + 1) / (time.time() - t0):.1f}/s", flush=True)
    np.savez(a.output, files=np.array(files), descriptors=desc, found=found, points=points, chip_to_image=maps)
    print(f"wrote {a.output}: {len(files)} photos, HOG found {found.sum()}, {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
