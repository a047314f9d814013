"""Where a face goes in the crop: five-point similarity alignment (``arcface``, ``dlib``) or the detector's box
(``box``).

``arcface``: the five landmarks (eye centres, nose tip, mouth corners) are mapped by the least-squares similarity
transform (rotation, uniform scale, translation; scikit-image's ``SimilarityTransform``, the estimator insightface's
``norm_crop`` uses) onto the points insightface's ArcFace models are trained with in a 112 x 112 crop, scaled by
``size / 112`` for other sizes (insightface shifts its 128 px variant sideways instead; here a crop of any size
frames the face the same way). The warp is OpenCV's bilinear ``warpAffine`` with black borders, as ``norm_crop``;
a face shrunk by more than 2x is first reduced with area averaging, so a large photo does not alias.

``dlib``: the same five-point alignment onto where MTCNN's points fall in the 150 px chips dlib's face model was
trained on (``get_face_chip(img, shape5, size=150, padding=0.25)``, cut around dlib's own 5-point shape): fit with
``benchmarks/fit_dlib_template.py`` on LFW photos where both dlib's HOG detector and MTCNN found the face.

``box``: davidsandberg/facenet's ``align_dataset_mtcnn``: the detector's box grown by ``margin`` pixels of the
source photo (half on each side), clipped to the photo, resized to ``size`` x ``size`` without rotation (its LFW
setting: 160 px, margin 32).
"""

from __future__ import annotations

import numpy as np

from facenet_pl.utils.errors import ConfigError

#: insightface's ``arcface_dst``: left eye, right eye, nose tip, left and right mouth corner (as seen in the
#: image) in a 112 x 112 crop.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
#: MTCNN's five points (same order) in dlib's 150 x 150 face chip (padding 0.25): the mean over 994 deep-funneled LFW
#: photos where both detectors found the face, carried into chip pixels by dlib's own chip geometry
#: (``python benchmarks/fit_dlib_template.py --photos 1000``, dlib-bin 20.0.1, 2026-12-07). Spread of the eyes
#: 1.6-2.0 px, nose and mouth 4-6 px (dlib places the face by its eye corners and nose base, not the mouth).
DLIB_150 = np.array(
    [[47.9454, 46.0047], [102.2647, 46.0751], [74.8842, 78.0999], [50.5054, 105.3971], [98.6538, 105.5415]],
    dtype=np.float64,
)
#: Templates that place five landmarks: their points and the crop side they are given for.
LANDMARK_TEMPLATES = {"arcface": (ARCFACE_112, 112), "dlib": (DLIB_150, 150)}
TEMPLATES = ("arcface", "dlib", "box")
#: Default crop side per template: insightface's 112, dlib's 150, davidsandberg's 160.
DEFAULT_SIZE = {"arcface": 112, "dlib": 150, "box": 160}


def check_template(template: str, size: int, margin: int) -> None:
    """One line for settings that cannot work, before any photo is read."""
    if template not in TEMPLATES:
        raise ConfigError(f"align template {template!r}: expected one of {', '.join(TEMPLATES)}")
    if int(size) < 16:
        raise ConfigError(f"align size must be >= 16 px, got {size}")
    if int(margin) < 0:
        raise ConfigError(f"align margin must be >= 0 px (the box template's border), got {margin}")


def arcface_points(size: int, template: str = "arcface") -> np.ndarray:
    """The five points (5, 2) of a landmark template (``arcface`` or ``dlib``) for a ``size`` x ``size`` crop."""
    points, side = LANDMARK_TEMPLATES[template]
    return points * (float(size) / side)


def similarity_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 least-squares similarity transform taking points ``src`` (N, 2) to ``dst`` (N, 2) (Umeyama, via
    scikit-image)."""
    from skimage.transform import SimilarityTransform

    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        tform = SimilarityTransform.from_estimate(src, dst)
        if not tform:
            raise ValueError("degenerate landmarks: no similarity transform fits them")
    else:  # pragma: no cover - older scikit-image
        tform = SimilarityTransform()
        if not tform.estimate(src, dst):
            raise ValueError("degenerate landmarks: no similarity transform fits them")
    return np.asarray(tform.params[:2], np.float64)


def _warp(rgb: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    import cv2

    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:  # shrink with area averaging first: bilinear sampling alone would alias a large photo
        factor = 0.5 / scale
        h, w = rgb.shape[:2]
        small = (max(1, round(w / factor)), max(1, round(h / factor)))
        fx, fy = small[0] / w, small[1] / h
        rgb = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA)
        m = m @ np.array([[1 / fx, 0, 0], [0, 1 / fy, 0], [0, 0, 1]])
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def arcface_crop(rgb: np.ndarray, landmarks: np.ndarray, size: int = 112, template: str = "arcface") -> np.ndarray:
    """The ``size`` x ``size`` crop of RGB uint8 ``rgb`` whose five ``landmarks`` (5, 2) land on the points of
    ``template`` (``arcface`` or ``dlib``)."""
    return _warp(rgb, similarity_matrix(landmarks, arcface_points(size, template)), size)


def box_crop(rgb: np.ndarray, box: np.ndarray, size: int = 160, margin: int = 32) -> np.ndarray:
    """davidsandberg's crop: box (x1, y1, x2, y2) grown by ``margin`` px in all, clipped, resized to ``size``."""
    import cv2

    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    left, top = int(max(x1 - margin / 2, 0)), int(max(y1 - margin / 2, 0))
    right, bottom = int(min(x2 + margin / 2, w)), int(min(y2 + margin / 2, h))
    if right <= left or bottom <= top:
        raise ValueError(f"empty face box {box} in a {w} x {h} image")
    patch = rgb[top:bottom, left:right]
    shrink = patch.shape[0] > size or patch.shape[1] > size
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
