"""Face detection and alignment (``facenet-pl align``, ``data.align``) on generated images: a rendered face
placed in a larger photo is found and cropped; a photo without a face is counted and skipped; the eye line is
levelled (checked with known eye positions)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cv2")

from facenet_pl.align import Detection, FaceAligner, align_folder  # noqa: E402
from facenet_pl.cli import main  # noqa: E402
from facenet_pl.errors import ConfigError  # noqa: E402

#: Rendered identities (seed 1, 128 px, no occlusion) that OpenCV's frontal-face cascade finds in a photo.
DETECTED = (3, 5, 11, 18)


def _faces():
    from facenet_pl.data.synthetic import SyntheticFaceConfig, generate_split

    x, _ = generate_split(
        20, 1, seed=1, split="test", cfg=SyntheticFaceConfig(image_size=128, difficulty=0.0, occlusion_prob=0.0)
    )
    return x.numpy().transpose(0, 2, 3, 1)


def _photo(face: np.ndarray, left: int, top: int, size=(300, 260)) -> np.ndarray:
    canvas = np.full((size[1], size[0], 3), 90, np.uint8)
    canvas[top : top + face.shape[0], left : left + face.shape[1]] = face
    return canvas


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """src/<person>/{a,b}.jpg: a rendered face at two places in a larger photo; src/nobody/flat.png: no face;
    src/nobody/notes.txt: not an image."""
    src = tmp_path_factory.mktemp("align") / "src"
    faces = _faces()
    for i in DETECTED:
        (src / f"person{i}").mkdir(parents=True)
        Image.fromarray(_photo(faces[i], 40, 60)).save(src / f"person{i}" / "a.jpg", quality=95)
        Image.fromarray(_photo(faces[i], 150, 20)).save(src / f"person{i}" / "b.jpg", quality=95)
    (src / "nobody").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 40, (200, 200, 3)).astype(np.uint8)).save(
        src / "nobody" / "flat.png"
    )
    (src / "nobody" / "notes.txt").write_text("not an image")
    return src


def test_the_largest_face_is_found_where_it_was_placed():
    face = _faces()[3]
    det = FaceAligner().detect(_photo(face, 150, 20))
    assert det is not None
    x, y, w, h = det.box
    # the rendered face (128 px) occupies [150, 278] x [20, 148]: the box centre must be inside its middle half
    assert 150 + 32 < x + w / 2 < 150 + 96 and 20 + 32 < y + h / 2 < 20 + 96, det.box
    assert 40 < w < 140
    crop = FaceAligner(size=64)(_photo(face, 150, 20))  # detect + crop in one call
    assert crop is not None and crop.shape == (64, 64, 3)
    assert FaceAligner()(np.full((200, 200, 3), 90, np.uint8)) is None


def test_align_writes_crops_counts_no_face_and_never_overwrites(photos, tmp_path, capsys):
    dst = tmp_path / "aligned"
    assert main(["align", str(photos), str(dst), "--size", "96", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "aligned 8 face(s)" in out and "skipped 1 with no face found and 1 unreadable" in out, out
    report = json.loads((dst / "align_report.json").read_text())
    assert report["skipped_files"] == {"no_face": ["nobody/flat.png"], "unreadable": ["nobody/notes.txt"]}
    crops = sorted(dst.rglob("*.png"))
    assert len(crops) == 8 and all(Image.open(c).size == (96, 96) for c in crops)
    # the crop is the face, not the grey background: most pixels differ from the canvas colour 90
    arr = np.asarray(Image.open(dst / "person3" / "b.png")).astype(int)
    assert (np.abs(arr - 90).sum(-1) > 30).mean() > 0.5
    before = {c: c.stat().st_mtime_ns for c in crops}
    assert main(["align", str(photos), str(dst), "--size", "96", "--workers", "2"]) == 0
    again = capsys.readouterr().out
    assert "aligned 0 face(s)" in again and "kept 8 already there" in again, again
    assert {c: c.stat().st_mtime_ns for c in crops} == before  # nothing rewritten without --force
    assert main(["align", str(photos), str(photos / "inside")]) == 2
    assert "must not be the input folder" in capsys.readouterr().err


def test_faces_with_both_eyes_are_counted_as_levelled(photos, tmp_path, capsys, monkeypatch):
    """The cascade finds no eyes in the rendered faces, so eyes are added to the detections of the faces placed
    on the left (the four a.jpg photos): the run must count exactly those as levelled."""
    detect = FaceAligner.detect

    def with_eyes_on_the_left(self, rgb):
        det = detect(self, rgb)
        if det is not None and det.box[0] < 100:
            x, y, w, h = det.box
            det = Detection(det.box, ((x + 0.3 * w, y + 0.4 * h), (x + 0.7 * w, y + 0.42 * h)))
        return det

    monkeypatch.setattr(FaceAligner, "detect", with_eyes_on_the_left)
    assert main(["align", str(photos), str(tmp_path / "out"), "--size", "48", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "aligned 8 face(s) (4 with both eyes found and levelled)" in out, out
    assert json.loads((tmp_path / "out" / "align_report.json").read_text())["levelled"] == 4


def test_no_face_center_keeps_the_file_as_a_centre_crop_at_the_median_face_size(photos, tmp_path, capsys):
    """``--no-face center``: a 240 x 200 gradient (no face) becomes the centre square of side median relative face
    side x 200 x (1 + margin), checked against a PIL crop + resize of that square."""
    src = tmp_path / "src"
    (src / "person3").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        (src / "person3" / name).write_bytes((photos / "person3" / name).read_bytes())
    (src / "nobody").mkdir()
    yy, xx = np.mgrid[:200, :240]
    grad = np.stack([xx, yy, (xx + yy) // 2], -1).astype(np.uint8)
    Image.fromarray(grad).save(src / "nobody" / "gradient.png")
    dst = tmp_path / "aligned"
    assert main(["align", str(src), str(dst), "--size", "64", "--margin", "0.2", "--no-face", "center"]) == 0
    out = capsys.readouterr().out
    assert "aligned 2 face(s)" in out and "cropped 1 without a detectable face around the image centre" in out, out
    report = json.loads((dst / "align_report.json").read_text())
    assert report["centered"] == 1 and report["centered_files"] == ["nobody/gradient.png"]
    assert report["skipped_files"]["no_face"] == []
    rel = report["median_face_side"]
    sides = []
    for name in ("a.jpg", "b.jpg"):
        img = np.asarray(Image.open(src / "person3" / name).convert("RGB"))
        _, _, w, h = FaceAligner().detect(img).box
        sides.append(max(w, h) / 260)  # the photos are 300 x 260
    assert rel == pytest.approx(np.median(sides)) and 0.2 < rel < 0.6
    side = rel * 200 * 1.2
    box = (120 - side / 2, 100 - side / 2, 120 + side / 2, 100 + side / 2)
    expected = np.asarray(Image.fromarray(grad).resize((64, 64), Image.BILINEAR, box=box)).astype(float)
    got = np.asarray(Image.open(dst / "nobody" / "gradient.png")).astype(float)
    assert np.abs(got - expected).mean() < 2.0
    with pytest.raises(ConfigError, match="no_face='drop'"):
        align_folder(src, tmp_path / "x", no_face="drop")


def test_the_eye_line_is_levelled():
    """Two dark dots (eyes) on a line tilted by 20 degrees: after the crop they sit on one row, mirrored
    about the middle, the distance between them scaled by size / (box side x (1 + margin))."""
    img = np.full((200, 200, 3), 200, np.uint8)
    cx, cy, half = 100.0, 100.0, 30.0
    t = math.radians(20)
    eyes = ((cx - half * math.cos(t), cy - half * math.sin(t)), (cx + half * math.cos(t), cy + half * math.sin(t)))
    yy, xx = np.mgrid[:200, :200]
    for ex, ey in eyes:
        img[(xx - ex) ** 2 + (yy - ey) ** 2 <= 16] = 0
    aligner = FaceAligner(size=100, margin=0.25)
    out = aligner.crop(img, Detection((60, 60, 80, 80), eyes)).mean(-1)
    dark = np.argwhere(out < 100)
    left, right = dark[dark[:, 1] < 50], dark[dark[:, 1] >= 50]
    (ly, lx), (ry, rx) = left.mean(0), right.mean(0)
    assert abs(ly - ry) < 1.0 and abs(ly - 49.5) < 1.0  # level, at the centre row (face centre = eye centre here)
    assert abs((rx - lx) - 2 * half * 100 / (80 * 1.25)) < 1.5
    assert abs((lx + rx) / 2 - 49.5) < 1.0


def test_bad_settings_are_one_line():
    with pytest.raises(ConfigError, match="align size must be >= 16"):
        FaceAligner(size=8)
    with pytest.raises(ConfigError, match="is not a folder"):
        align_folder("/nonexistent/photos", "/tmp/x")


def test_data_align_trains_on_the_crops(photos, tmp_path):
    """data.align=true: the folder module aligns into its cache dir and scans the crops; the photo without a
    face and the text file are not among them."""
    from facenet_pl.data.folder import FolderDataModule

    dm = FolderDataModule(
        root=str(photos),
        image_size=32,
        align=True,
        cache_dir=str(tmp_path / "cache"),
        decode_workers=1,
        val_identities=0,
        test_identities=0,
        p=2,
        k=2,
    )
    paths, labels, names = dm._scan()
    assert names == [f"person{i}" for i in sorted(DETECTED, key=lambda i: f"person{i}")]
    assert len(paths) == 8 and all(str(p).startswith(str(tmp_path / "cache" / "aligned-")) for p in paths)
    assert np.bincount(labels).tolist() == [2, 2, 2, 2]
    images, _, _, _ = dm._decode()
    assert images.shape == (8, 3, 32, 32)
