"""Face detection (MTCNN) and alignment (``facenet-pl align``, ``data.align``) on generated photos.

The geometry is checked against the published template points (dots drawn at a known similarity transform of
them must land on them), the detector against the known eye and mouth positions of rendered faces, and the
folder runner through the CLI: names, counts, no-face modes, colour modes, resumption.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cv2")
pytest.importorskip("facenet_pytorch")
pytest.importorskip("skimage")

from facenet_pl.cli.main import main  # noqa: E402
from facenet_pl.data.align import (  # noqa: E402
    ARCFACE_112,
    Face,
    MTCNNDetector,
    align_folder,
    arcface_crop,
    box_crop,
    choose_face,
    crop_names,
)
from facenet_pl.data.align.templates import similarity_matrix  # noqa: E402
from facenet_pl.utils.errors import ConfigError  # noqa: E402

S = 128  # rendered face side
#: Rendered identities (seed 1, test split, difficulty 0) whose face MTCNN finds with probability > 0.95.
FOUND = (3, 18, 23)
#: Where the face is pasted in the 260 x 300 photo.
LEFT, TOP = 60, 40


def _render(ids=FOUND):
    """Faces without pose, light or expression nuisances (difficulty 0), so the renderer's identity parameters
    give the pixel positions of the eye centres and mouth corners."""
    from facenet_pl.data.synthetic import _IDENTITY_KEYS, SyntheticFaceConfig, generate_split, identity_params

    n = max(ids) + 1
    x, _ = generate_split(
        n, 1, seed=1, split="test", cfg=SyntheticFaceConfig(image_size=S, difficulty=0.0, occlusion_prob=0.0)
    )
    params = identity_params(n, 1, "test")
    key = {name: i for i, name in enumerate(_IDENTITY_KEYS)}

    def px(c):  # face coordinates in [-1, 1] -> pixel centres
        return (float(c) + 1) / 2 * S - 0.5

    faces, points = {}, {}
    for i in ids:
        p = params[i]
        dx, ey, mw, my = (p[key[k]] for k in ("eye_dx", "eye_y", "mouth_w", "mouth_y"))
        faces[i] = x[i].numpy().transpose(1, 2, 0)
        points[i] = np.array([[px(-dx), px(ey)], [px(dx), px(ey)], [px(-mw), px(my)], [px(mw), px(my)]])
    return faces, points


@pytest.fixture(scope="module")
def rendered():
    return _render()


def _photo(face, left=LEFT, top=TOP, size=(260, 300), value=90):
    canvas = np.full((size[1], size[0], 3), value, np.uint8)
    canvas[top : top + face.shape[0], left : left + face.shape[1]] = face
    return canvas


@pytest.fixture(scope="module")
def detector():
    return MTCNNDetector("cpu")


@pytest.mark.parametrize("template", ["arcface", "dlib"])
def test_landmarks_that_are_a_similarity_of_the_template_land_on_it(template):
    """Five dots drawn at the template's points (ArcFace's published 112 px ones; dlib's 150 px fit) rotated by 25
    degrees, scaled by 2.3 and moved: after the crop they sit on those points, and on points x size / side at
    another size."""
    from facenet_pl.data.align.templates import LANDMARK_TEMPLATES

    points, side = LANDMARK_TEMPLATES[template]
    t, scale = math.radians(25), 2.3
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    pts = points @ rot.T * scale + np.array([130.0, 60.0])
    img = np.full((520, 500, 3), 220, np.uint8)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    for (x, y), c in zip(pts, colours):
        img[(xx - x) ** 2 + (yy - y) ** 2 <= 20] = c
    for size in (side, 160):
        crop = arcface_crop(img, pts, size, template).astype(int)
        for (tx, ty), c in zip(points * size / side, colours):
            mask = np.abs(crop - np.array(c)).sum(-1) < 60
            ys, xs = np.nonzero(mask)
            assert len(xs) > 3
            assert abs(xs.mean() - tx) < 1.0 and abs(ys.mean() - ty) < 1.0, (size, c)


def test_similarity_fit_is_least_squares_against_a_closed_form_reference():
    """Noisy points: the fitted matrix equals Umeyama's closed form written out in numpy."""
    rng = np.random.default_rng(0)
    src = ARCFACE_112 * 1.7 + rng.normal(0, 3, (5, 2)) + 40
    mu_s, mu_d = src.mean(0), ARCFACE_112.mean(0)
    a, b = src - mu_s, ARCFACE_112 - mu_d
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    r = u @ sign @ vt
    c = np.trace(np.diag(d) @ sign) / a.var(0).sum()
    expected = np.hstack([c * r, (mu_d - c * r @ mu_s)[:, None]])
    assert np.allclose(similarity_matrix(src, ARCFACE_112), expected, atol=1e-9)


def test_box_crop_is_the_detector_box_plus_half_the_margin_each_side_clipped():
    """An image whose red channel is its x coordinate and green its y: the crop's borders read the box + margin / 2
    (davidsandberg's rule), clipped at the image edge."""
    h, w = 200, 250
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([xx, yy, np.zeros_like(xx)], -1).astype(np.uint8)
    crop = box_crop(img, np.array([60.0, 50.0, 140.0, 150.0]), size=100, margin=32).astype(float)
    assert abs(crop[:, 0, 0].mean() - 44) < 1.5 and abs(crop[:, -1, 0].mean() - 155) < 1.5
    assert abs(crop[0, :, 1].mean() - 34) < 1.5 and abs(crop[-1, :, 1].mean() - 165) < 1.5
    edge = box_crop(img, np.array([5.0, 5.0, 100.0, 100.0]), size=64, margin=40).astype(float)
    assert abs(edge[:, 0, 0].mean()) < 1.0 and abs(edge[0, :, 1].mean()) < 1.0  # clipped at 0, no black border


def test_mtcnn_finds_the_rendered_eyes_and_mouth(rendered, detector):
    faces, points = rendered
    found = detector.detect([_photo(faces[i]) for i in FOUND])
    for i, fs in zip(FOUND, found):
        assert len(fs) == 1 and fs[0].prob > 0.95
        known = points[i] + np.array([LEFT, TOP])
        got = fs[0].landmarks[[0, 1, 3, 4]]  # eyes and mouth corners (the renderer's nose has no tip point)
        assert np.linalg.norm(got - known, axis=1).max() < 6.0, (i, got, known)


def test_aligned_crop_puts_the_rendered_eyes_on_the_template(rendered, detector):
    """The rendered eyes, mapped by the fitted transform: level, centred on the template's eye midpoint, each
    within a few pixels of its template point (the drawn faces' proportions are not a human's, so the five-point
    fit cannot put every point exactly on the template)."""
    faces, points = rendered
    for i in FOUND:
        photo = _photo(faces[i])
        face = detector.detect([photo])[0][0]
        m = similarity_matrix(face.landmarks, ARCFACE_112)
        eyes = (points[i][:2] + np.array([LEFT, TOP])) @ m[:, :2].T + m[:, 2]
        assert abs(eyes[0, 1] - eyes[1, 1]) < 2.0, (i, eyes)
        assert np.linalg.norm(eyes.mean(0) - ARCFACE_112[:2].mean(0)) < 4.0, (i, eyes)
        assert np.linalg.norm(eyes - ARCFACE_112[:2], axis=1).max() < 8.0, (i, eyes)


@pytest.mark.parametrize("angle", [25, -20])
def test_a_rotated_photo_aligns_to_the_upright_crop(rendered, detector, angle):
    """The photo turned by ``angle`` degrees: the rendered eyes (turned with it) land, in its aligned crop, where
    they land in the upright photo's crop, on a level line; without alignment the eye line keeps the tilt."""
    faces, points = rendered

    def crop_eyes(photo, eyes):
        m = similarity_matrix(detector.detect([photo])[0][0].landmarks, ARCFACE_112)
        return eyes @ m[:, :2].T + m[:, 2]

    photo = _photo(faces[3])
    eyes = points[3][:2] + np.array([LEFT, TOP])
    t = math.radians(angle)  # PIL turns counter-clockwise about the image centre
    c = np.array([photo.shape[1] / 2, photo.shape[0] / 2])
    turn = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    turned_eyes = (eyes - c) @ turn.T + c
    turned = np.asarray(Image.fromarray(photo).rotate(angle, resample=Image.BILINEAR, fillcolor=(90, 90, 90)))
    upright, aligned = crop_eyes(photo, eyes), crop_eyes(turned, turned_eyes)
    assert np.linalg.norm(aligned - upright, axis=1).max() < 5.0, (aligned, upright)
    tilt = math.degrees(math.atan2(*(aligned[1] - aligned[0])[::-1]))
    before = math.degrees(math.atan2(*(turned_eyes[1] - turned_eyes[0])[::-1]))
    assert abs(tilt) < 5 and abs(before) > 19, (tilt, before)


def test_several_faces_keep_the_large_central_one():
    small_central = Face(np.array([90.0, 90.0, 130.0, 130.0]), np.zeros((5, 2)), 0.99)
    large_corner = Face(np.array([0.0, 0.0, 60.0, 60.0]), np.zeros((5, 2)), 0.99)
    large_central = Face(np.array([70.0, 70.0, 150.0, 150.0]), np.zeros((5, 2)), 0.9)
    assert choose_face([small_central, large_corner], (220, 220)) is small_central  # 1600 - 0 > 3600 - 2 * 2 * 80^2
    assert choose_face([small_central, large_corner, large_central], (220, 220)) is large_central


def test_crop_names_are_unique_for_any_names():
    from pathlib import Path

    rel = [Path(p) for p in ("s01/subject01.happy", "s01/subject01.sad", "s01/subject01", "a/x.jpg", "a/x.PNG")]
    assert [str(p) for p in crop_names(rel)] == [
        "s01/subject01.happy.png",
        "s01/subject01.sad.png",
        "s01/subject01.png",
        "a/x.jpg.png",
        "a/x.PNG.png",
    ]
    assert [str(p) for p in crop_names([Path("lfw/A_0001.jpg")])] == ["lfw/A_0001.png"]  # what data=lfw reads
    assert [str(p) for p in crop_names([Path("b/only.happy")])] == ["b/only.happy.png"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, rendered):
    """src/<person>/{a,b}.jpg: a rendered face at two places; src/yale/subject01.happy|.sad: extension-less GIFs
    (a real data set's naming); src/nobody/flat.png: no face; src/nobody/notes.txt: not an image."""
    faces, _ = rendered
    src = tmp_path_factory.mktemp("align") / "src"
    for i in FOUND:
        (src / f"person{i}").mkdir(parents=True)
        Image.fromarray(_photo(faces[i])).save(src / f"person{i}" / "a.jpg", quality=95)
        Image.fromarray(_photo(faces[i], left=100, top=140)).save(src / f"person{i}" / "b.jpg", quality=95)
    (src / "yale").mkdir()
    for name, i in (("subject01.happy", 3), ("subject01.sad", 18)):
        Image.fromarray(_photo(faces[i])).convert("L").save(src / "yale" / name, format="GIF")
    (src / "nobody").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 40, (200, 200, 3)).astype(np.uint8)).save(
        src / "nobody" / "flat.png"
    )
    (src / "nobody" / "notes.txt").write_text("not an image")
    return src


def test_align_cli_writes_crops_counts_and_never_overwrites(photos, tmp_path, capsys):
    dst = tmp_path / "aligned"
    assert main(["align", str(photos), str(dst), "--workers", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "aligned 8 face(s)" in out and "skipped 1 with no face found; 1 unreadable" in out, out
    report = json.loads((dst / "align_report.json").read_text())
    assert report["skipped_files"] == {"no_face": ["nobody/flat.png"], "unreadable": ["nobody/notes.txt"]}
    assert (report["template"], report["size"], report["detector"]) == ("arcface", 112, "mtcnn")
    crops = sorted(dst.rglob("*.png"))
    assert len(crops) == 8 and all(Image.open(c).size == (112, 112) for c in crops)
    assert (dst / "yale" / "subject01.happy.png").is_file() and (dst / "yale" / "subject01.sad.png").is_file()
    # the same face pasted at two places gives nearly the same crop: the crop follows the face
    a = np.asarray(Image.open(dst / "person3" / "a.png")).astype(float)
    b = np.asarray(Image.open(dst / "person3" / "b.png")).astype(float)
    assert np.abs(a - b).mean() < 8
    before = {c: c.stat().st_mtime_ns for c in crops}
    assert main(["align", str(photos), str(dst), "--workers", "2", "--device", "cpu"]) == 0
    again = capsys.readouterr().out
    assert "aligned 0 face(s)" in again and "kept 8 crop(s) already there" in again, again
    assert {c: c.stat().st_mtime_ns for c in crops} == before  # nothing rewritten without --force
    # crops of another geometry are never mixed into the folder
    assert main(["align", str(photos), str(dst), "--template", "box", "--device", "cpu"]) == 2
    assert "holds crops made with" in capsys.readouterr().err
    assert main(["align", str(photos), str(photos / "inside")]) == 2
    assert "must not be the input folder" in capsys.readouterr().err


def test_box_template_through_the_cli(photos, tmp_path, capsys):
    dst = tmp_path / "box"
    assert main(["align", str(photos), str(dst), "--template", "box", "--size", "80", "--device", "cpu"]) == 0
    assert "box template, 80 x 80 px, margin 32 px" in capsys.readouterr().out
    assert Image.open(dst / "person18" / "b.png").size == (80, 80)


def test_colour_modes_and_exif_rotation_go_through(rendered, tmp_path):
    """CMYK JPEG, 8-bit gray PNG, 16-bit gray PNG and a JPEG stored on its side with an EXIF orientation tag:
    each is found and aligned, and the EXIF-rotated one like the upright original."""
    faces, _ = rendered
    photo = _photo(faces[23])
    src = tmp_path / "src" / "p"
    src.mkdir(parents=True)
    Image.fromarray(photo).convert("CMYK").save(src / "cmyk.jpg", quality=95)
    Image.fromarray(photo).convert("L").save(src / "gray.png")
    Image.fromarray(np.asarray(Image.fromarray(photo).convert("L")).astype(np.uint16) * 257).save(src / "g16.png")
    sideways = Image.fromarray(photo).transpose(Image.Transpose.ROTATE_90)  # stored turned; EXIF 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(src / "exif.jpg", quality=95, exif=exif)
    Image.fromarray(photo).save(src / "upright.jpg", quality=95)
    r = align_folder(tmp_path / "src", tmp_path / "dst", device="cpu")
    assert r["aligned"] == 5 and r["no_face"] == 0 and r["unreadable"] == 0, r
    from facenet_pl.data.images import load_rgb

    stored = np.asarray(Image.open(src / "exif.jpg").convert("RGB")).astype(float)  # as saved: on its side
    assert stored.shape[:2] == photo.shape[1::-1]
    assert np.abs(load_rgb(src / "exif.jpg").astype(float) - photo).mean() < 4  # read upright
    up = np.asarray(Image.open(tmp_path / "dst" / "p" / "upright.png")).astype(float)
    turned = np.asarray(Image.open(tmp_path / "dst" / "p" / "exif.png")).astype(float)
    assert np.abs(up - turned).mean() < 10


def test_no_face_center_keeps_the_photo_at_the_median_face_placement(photos, tmp_path, capsys):
    """``--no-face center``: a photo without a face is cropped with the median relative landmarks of the faces
    found in the run: a gradient image shows that the crop is the warp of exactly those points."""
    src = tmp_path / "src"
    (src / "person3").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        (src / "person3" / name).write_bytes((photos / "person3" / name).read_bytes())
    (src / "nobody").mkdir()
    yy, xx = np.mgrid[:300, :260]
    grad = np.stack([xx * 255 // 259, yy * 255 // 299, np.zeros_like(xx)], -1).astype(np.uint8)
    Image.fromarray(grad).save(src / "nobody" / "gradient.png")
    dst = tmp_path / "aligned"
    assert main(["align", str(src), str(dst), "--no-face", "center", "--device", "cpu", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "aligned 2 face(s)" in out and "cropped 1 without a detectable face" in out, out
    report = json.loads((dst / "align_report.json").read_text())
    assert report["centered_files"] == ["nobody/gradient.png"] and report["skipped_files"] == {"unreadable": []}
    det = MTCNNDetector("cpu")
    rel = []
    for name in ("a.jpg", "b.jpg"):
        img = np.asarray(Image.open(src / "person3" / name).convert("RGB"))
        rel.append(det.detect([img])[0][0].landmarks / np.array([260, 300]))
    median = np.median(np.stack(rel), axis=0)
    assert np.allclose(report["median_geometry"], median, atol=1e-6)
    # the crop's pixel at the template's left eye reads the gradient at the median left eye of the photo
    got = np.asarray(Image.open(dst / "nobody" / "gradient.png")).astype(float)
    ex, ey = ARCFACE_112[0]
    x_src, y_src = median[0] * np.array([260, 300])
    assert abs(got[round(ey), round(ex), 0] - x_src * 255 / 259) < 3
    assert abs(got[round(ey), round(ex), 1] - y_src * 255 / 299) < 3
    with pytest.raises(ConfigError, match="no_face='drop'"):
        align_folder(src, tmp_path / "x", no_face="drop")


def test_bad_settings_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="align size must be >= 16"):
        align_folder(tmp_path, tmp_path / "o", size=8)
    with pytest.raises(ConfigError, match="template 'dlip'"):
        align_folder(tmp_path, tmp_path / "o", template="dlip")
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
    assert names == sorted(["person3", "person18", "person23", "yale"])
    assert len(paths) == 8 and all(str(p).startswith(str(tmp_path / "cache" / "aligned-")) for p in paths)
    assert np.bincount(labels).tolist() == [2, 2, 2, 2]
    images, _, _, _ = dm._decode()
    assert images.shape == (8, 3, 32, 32)


def test_photos_too_small_to_hold_a_face_are_counted_not_fatal(rendered, tmp_path, capsys):
    """1 x 1, 1 x 300 and 13 x 13 photos beside a real one: the run goes on, they count as having no face (a 1 x 1
    photo once aborted the whole run inside MTCNN with an empty torch.cat)."""
    from facenet_pl.cli.main import main

    faces, _ = rendered
    src = tmp_path / "src" / "p"
    src.mkdir(parents=True)
    Image.fromarray(_photo(faces[FOUND[0]])).save(src / "face.png")
    for name, shape in (("dot", (1, 1, 3)), ("line", (1, 300, 3)), ("small", (13, 13, 3))):
        Image.fromarray(np.full(shape, 128, np.uint8)).save(src / f"{name}.png")
    assert main(["align", str(tmp_path / "src"), str(tmp_path / "dst"), "--device", "cpu", "--workers", "1"]) == 0
    report = json.loads((tmp_path / "dst" / "align_report.json").read_text())
    assert (report["aligned"], report["no_face"], report["unreadable"]) == (1, 3, 0)
    assert sorted(p.name for p in (tmp_path / "dst" / "p").iterdir()) == ["face.png"]


def test_a_run_killed_before_its_first_report_keeps_its_geometry(photos, tmp_path, monkeypatch):
    """The crop geometry is on record before the first crop: a run that dies while cropping (here: the crop loop
    raises, as a kill would stop it) leaves a report a rerun with another --size is refused by; the same settings
    continue."""
    import facenet_pl.data.align.folder as folder

    dst = tmp_path / "dst"

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(folder, "_run", killed)
    with pytest.raises(KeyboardInterrupt):
        align_folder(photos, dst, size=112, device="cpu")
    monkeypatch.undo()
    assert json.loads((dst / "align_report.json").read_text())["complete"] is False
    with pytest.raises(ConfigError, match="holds crops made with"):
        align_folder(photos, dst, size=160, device="cpu")
    report = align_folder(photos, dst, size=112, device="cpu")
    assert report["complete"] is True and report["size"] == 112 and report["aligned"] > 0


def _children(pid: int) -> list[int]:
    """Pool processes (multiprocessing's spawn entry point) whose parent is ``pid``, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"multiprocessing" in cmd:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_align_workers_die_with_a_killed_parent(rendered, tmp_path):
    """``kill -9`` of ``facenet-pl align`` while its 2 worker processes crop: they end too (they once went on
    cropping, then idled at ~0.9 GB each, forever, with parent 1)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from ..helpers import ENV

    faces, _ = rendered
    src = tmp_path / "src"
    for i in range(40):
        (src / f"p{i}").mkdir(parents=True)
        Image.fromarray(_photo(faces[FOUND[i % 3]], left=20 + i)).save(src / f"p{i}" / "a.png")
    code = "from facenet_pl.cli.main import main; raise SystemExit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "align", str(src), str(tmp_path / "dst"), "--workers", "2", "--batch-size", "1",
         "--device", "cpu"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while len(_children(proc.pid)) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        workers = _children(proc.pid)
        assert len(workers) >= 2, "the workers never started"
        while not any((tmp_path / "dst").rglob("*.png")) and time.time() < deadline:
            time.sleep(0.2)  # they are cropping
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 15
        while any(Path(f"/proc/{w}").exists() for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        alive = [w for w in workers if Path(f"/proc/{w}").exists() and "Z" not in _state(w)]
        assert not alive, f"worker processes {alive} outlived their killed parent"
    finally:
        proc.kill()
        for w in _children(proc.pid):
            os.kill(w, signal.SIGKILL)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
