"""Small and odd real-face folders work out of the box (issue 14): settings derived from the folder before any
decoding, named held-out people, include/exclude patterns, aspect ratio kept, gray training."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from facenet_pl.data.folder import FolderDataModule
from facenet_pl.data.folder_plan import plan_folder
from facenet_pl.data.images import load_image
from facenet_pl.utils.errors import ConfigError

from ..helpers import TINY, run_entry, train_in_process, write_face_folders


@pytest.fixture(scope="module")
def faces38(tmp_path_factory):
    """38 people x 6 images (a small real-face set's shape), PNG files."""
    return write_face_folders(tmp_path_factory.mktemp("f38") / "faces", 38, 6)


FOLDER = [
    "data=folder",
    "backbone.input_size=32",
    "data.cache_dir=null",
    "data.decode_workers=0",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "test=false",
    "model.embedding_dim=16",
]


def test_defaults_are_derived_from_the_folder_and_printed_before_decoding(faces38, tmp_path, caplog, monkeypatch):
    """The 38-person folder with every default: 15% held out (6 + 6), P = the 26 training people, one pass over
    the training images per epoch; said once, before the first image is decoded; training runs."""
    import facenet_pl.data.folder as folder

    order = []
    real = folder.cached_decode
    monkeypatch.setattr(folder, "cached_decode", lambda *a, **k: (order.append("decode"), real(*a, **k))[1])
    caplog.set_level(logging.INFO, logger="facenet_pl")
    seen = []

    class Record(logging.Handler):
        def emit(self, record):
            if "Derived from the data" in record.getMessage():
                order.append("plan")
                seen.append(record.getMessage())

    logging.getLogger("facenet_pl").addHandler(handler := Record())
    try:
        train_in_process(tmp_path, *FOLDER, f"data.root={faces38}", tiny=False)
    finally:
        logging.getLogger("facenet_pl").removeHandler(handler)
    assert order[:2] == ["plan", "decode"] and order.count("plan") == 1, order
    msg = seen[0]
    # Independent arithmetic: 38 people, round(0.15 * 38) = 6 held out each; 26 train; p = min(32, 26);
    # batches = max(20, 26 // 26, 26 * 6 // (26 * 4)) = 20 (the floor for small folders).
    for part in (
        "38 identities",
        "hold out 6 for validation and 6 for the test",
        "data.val_identities=6",
        "data.test_identities=6",
        "data.p=26",
        "data.batches_per_epoch=20",
        "verification folds: val 3",
    ):
        assert part in msg, msg


@pytest.mark.parametrize(
    "n, val, test", [(1000, 100, 100), (200, 30, 30), (38, 6, 6), (15, 4, 4), (12, 4, 4), (11, 0, 4), (6, 0, 4)]
)
def test_auto_held_out_sizes(n, val, test):
    labels = np.repeat(np.arange(n), 3)
    plan = plan_folder(
        labels,
        [f"p{i}" for i in range(n)],
        "r",
        val_identities="auto",
        test_identities="auto",
        p="auto",
        k=2,
        batches_per_epoch="auto",
    )
    assert (len(plan.val_ids), len(plan.test_ids)) == (val, test)
    assert len(plan.train_ids) == n - val - test
    assert not set(plan.val_ids) & set(plan.test_ids) and not set(plan.train_ids) & set(plan.val_ids)
    assert plan.p == min(32, n - val - test)
    # one pass over the training images (3 images each, p x k = 2p per batch), at least 20 batches
    assert plan.batches_per_epoch == max(20, (n - val - test) // plan.p, 3 * (n - val - test) // (2 * plan.p))


def test_too_small_a_folder_is_refused_with_the_key():
    with pytest.raises(ConfigError, match=r"data.val_identities=auto: the folder has 5 identities"):
        plan_folder(
            np.repeat(np.arange(5), 3), list("abcde"), "r", val_identities="auto", test_identities="auto", p="auto", k=2
        )


def test_named_held_out_identities(faces38, tmp_path):
    names_file = tmp_path / "test_people.txt"
    names_file.write_text("# test people\nperson3\n\nperson7\nperson11\nperson20\n")
    dm = FolderDataModule(
        root=str(faces38),
        image_size=16,
        val_identities=["person0", "person1", "person2", "person5"],
        test_identities=str(names_file),
        cache_dir=None,
        decode_workers=0,
        val_folds=2,
        val_pairs_per_fold=5,
        p="auto",
        k=2,
    )
    dm.setup("fit")
    assert sorted(dm.val_split.identities) == ["person0", "person1", "person2", "person5"]
    assert sorted(dm.test_split.identities) == ["person11", "person20", "person3", "person7"]
    names = sorted(d.name for d in faces38.iterdir())  # labels index the identity folders in sorted order
    train_people = {names[i] for i in np.unique(dm.train_set.labels.numpy())}
    assert len(train_people) == 30 and not train_people & {"person0", "person3", "person20"}


@pytest.mark.parametrize(
    "val, test, message",
    [
        (["person0", "nobody", "person1", "person2"], 0, "1 name(s) are not identity folders"),
        (
            ["person0", "person1", "person2", "person3"],
            ["person3", "person4", "person5", "person6"],
            "both name person3",
        ),
        ("no_such_file.txt", 0, "an existing file of names"),
        (["person0", "person1"], 0, "2 identities are too few"),
        (38, 0, "leaves 0 to train on"),
    ],
)
def test_named_held_out_mistakes(faces38, monkeypatch, val, test, message):
    import facenet_pl.data.folder as folder

    monkeypatch.setattr(folder, "cached_decode", lambda *a, **k: pytest.fail("decoded before checking"))
    dm = FolderDataModule(
        root=str(faces38),
        image_size=16,
        val_identities=val,
        test_identities=test,
        cache_dir=None,
        decode_workers=0,
        p="auto",
        k=2,
    )
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dm.setup("fit")


def test_too_large_p_is_refused_before_decoding_with_the_auto_value(faces38, monkeypatch):
    import facenet_pl.data.folder as folder

    monkeypatch.setattr(folder, "cached_decode", lambda *a, **k: pytest.fail("decoded before checking"))
    dm = FolderDataModule(root=str(faces38), image_size=16, cache_dir=None, decode_workers=0, p=32, k=2)
    with pytest.raises(ConfigError, match=r"data.p=32 .* only 26 training identities .*data.p=auto picks 26"):
        dm.setup("fit")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data.val_identities=10", "data.test_identities=30"], "leaves 0 to train on"),
        (["data.p=64"], "data.p=64 identities per batch"),
        (["data.fit=squash"], "data.fit='squash'"),
        (["data.p=auto"], "data.p=auto is derived from the files of data=folder"),
    ],
)
def test_folder_mistakes_are_one_line_from_train_py(faces38, tmp_path, capsys, argv, message):
    """The issue's report: data.val_identities=10 on a 38-person folder printed a full traceback."""
    base = TINY if argv == ["data.p=auto"] else [*FOLDER, f"data.root={faces38}"]  # data.p=auto: synthetic
    r = run_entry("train.py", *base, *argv, f"hydra.run.dir={tmp_path / 'run'}")
    code, out, err = r.returncode, r.stdout, r.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in out + err


def test_include_and_exclude_patterns(tmp_path, caplog):
    root = write_face_folders(tmp_path / "f", 8, 4)
    for person in root.iterdir():  # add files a user wants skipped
        Image.new("RGB", (8, 8)).save(person / "x_Ambient.png")
        (person / "scan.bad").write_bytes(b"??")
    caplog.set_level(logging.INFO)
    from facenet_pl.data.images import scan_identity_folders

    paths, labels, names = scan_identity_folders(root, include=None, exclude=["*Ambient*", "*.bad"])
    assert len(paths) == 32 and not any("Ambient" in p.name or p.suffix == ".bad" for p in paths)
    assert "16 file(s) left out" in caplog.text
    paths, _, _ = scan_identity_folders(root, include="*/x_*")
    assert len(paths) == 8 and all(p.name == "x_Ambient.png" for p in paths)
    with pytest.raises(ConfigError, match="left out 48 file"):
        scan_identity_folders(root, include="*.jpg")


def test_include_and_exclude_from_the_command_line(faces38, tmp_path):
    """Hydra's override grammar takes glob patterns as they are typed."""
    from ..helpers import compose_in_process

    cfg = compose_in_process(
        "train",
        tmp_path,
        ["data=folder", f"data.root={faces38}", "data.exclude=[*Ambient*,*.bad]", "data.include=*.png"],
    )
    assert list(cfg.data.exclude) == ["*Ambient*", "*.bad"] and cfg.data.include == "*.png"


def _bands(path, w=60, h=20):
    """Left third red, middle green, right blue: where each band lands tells crop / pad / stretch apart."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 3, 0] = 255
    arr[:, w // 3 : 2 * w // 3, 1] = 255
    arr[:, 2 * w // 3 :, 2] = 255
    Image.fromarray(arr).save(path)
    return arr


def test_non_square_images_keep_their_aspect_ratio(tmp_path):
    _bands(tmp_path / "wide.png")
    crop = load_image(tmp_path / "wide.png", 20, fit="crop")  # the centre 20 x 20: all green
    assert (crop[1] == 255).all() and (crop[0] == 0).all() and (crop[2] == 0).all()
    pad = load_image(tmp_path / "wide.png", 30, fit="pad")  # 60 x 60 with 20 black rows above/below -> 30 px
    assert (pad[:, :9] == 0).all() and (pad[:, -9:] == 0).all()  # black bands (10 rows each, minus 1 of blending)
    assert (pad[0, 11:19, :9] == 255).all() and (pad[2, 11:19, -9:] == 255).all()  # all three colours kept
    stretch = load_image(tmp_path / "wide.png", 30, fit="stretch")  # no black, the bands squeezed
    assert stretch.reshape(3, -1).max(0).min() > 0 and (stretch[0, :, :9] == 255).all()


def test_grayscale_matches_the_luma_formula(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "c.png")
    gray = load_image(tmp_path / "c.png", 16, grayscale=True).astype(int)
    a = arr.astype(int)
    luma = (a[..., 0] * 299 + a[..., 1] * 587 + a[..., 2] * 114) / 1000  # ITU-R 601-2, as PIL documents
    assert (gray[0] == gray[1]).all() and (gray[1] == gray[2]).all()
    assert np.abs(gray[0] - luma).max() <= 1


def test_gray_sources_are_recorded_and_a_gray_model_embeds_colour_as_gray(tmp_path, capsys):
    """A gray source folder is recorded as such in the checkpoint; a model trained with data.grayscale=true
    turns colour inputs gray in the CLI (colour and its gray version embed the same)."""
    root = write_face_folders(tmp_path / "gray", 12, 4)
    for f in root.rglob("*.png"):
        Image.open(f).convert("L").save(f)
    train_in_process(tmp_path / "run", *FOLDER, f"data.root={root}", "data.grayscale=true", tiny=False)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["facenet_pl"]["data_summary"]["gray_fraction"] == 1.0
    assert saved["hyper_parameters"]["preprocess"]["grayscale"] is True

    colour = np.random.default_rng(1).integers(0, 256, (40, 40, 3)).astype(np.uint8)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    Image.fromarray(colour).convert("L").save(tmp_path / "as_gray.png")
    from facenet_pl.cli.common import embed_files as _embed_files

    _, _, emb = _embed_files(str(ckpt), [tmp_path / "colour.png", tmp_path / "as_gray.png"], flip=False)
    assert np.allclose(emb[0], emb[1], atol=1e-6)


def test_cv_tests_every_person_once_and_pools_the_folds(faces38, tmp_path):
    """cv=4 on the 38-person folder: four runs whose test people are disjoint and together every person; no run
    trains on its own test people; cv_metrics.json holds the mean and std of the runs' test accuracies and the
    pooled accuracy (all test pairs together, each scored by its run)."""
    from facenet_pl.inference.model_files import read_checkpoint

    folder = [o for o in FOLDER if o not in ("test=false", "trainer.limit_val_batches=1")]
    res = train_in_process(
        tmp_path, *folder, f"data.root={faces38}", "cv=4", "data.val_pairs_per_fold=10", "data.val_folds=3", tiny=False
    )
    tested = res["cv/test_identities"]
    people = sorted(p.name for p in faces38.iterdir())
    assert len(tested) == 4 and sorted(sum(tested, [])) == people  # each person tested exactly once
    assert all(9 <= len(t) <= 10 for t in tested)
    runs = [json_metrics(tmp_path / f"fold_{i}") for i in range(4)]
    for i, (run, names) in enumerate(zip(runs, tested)):
        ckpt = read_checkpoint(tmp_path / f"fold_{i}" / "checkpoints" / "last.ckpt")
        splits = ckpt["facenet_pl"]["identity_splits"]
        assert sorted(splits["test"]) == names and not set(splits["val"]) & set(names)
        assert run["test/identities"] == len(names)
    accs = [r["test/acc"] for r in runs]
    pairs = [r["test/pairs"] for r in runs]
    assert res["cv/fold_accuracies"] == accs and res["cv/pairs"] == sum(pairs)
    assert res["cv/accuracy"] == pytest.approx(np.mean(accs)) and res["cv/accuracy_std"] == pytest.approx(np.std(accs))
    assert res["cv/pooled_accuracy"] == pytest.approx(np.dot(accs, pairs) / sum(pairs))
    assert json_metrics(tmp_path, "cv_metrics.json")["cv/accuracy"] == res["cv/accuracy"]
    # a fold's checkpoint evaluates its own test people with no data options: the cv run's record vouches for the
    # data root it stores (a fold folder has no .hydra of its own), and eval.py gives the fold's test/acc
    from ..helpers import eval_in_process

    ev = eval_in_process(tmp_path / "fold_1" / "checkpoints" / "last.ckpt", tmp_path / "eval_fold_1")
    assert ev["same_data_as_training"] and ev["identities"] == runs[1]["test/identities"]


def json_metrics(run_dir, name="metrics.json"):
    import json

    return json.loads((run_dir / name).read_text())


def test_cv_on_a_folder_that_cannot_hold_the_folds_is_one_line(faces38, tmp_path):
    from ..helpers import train_error_in_process

    msg = train_error_in_process(tmp_path / "a", *FOLDER, f"data.root={faces38}", "cv=10", tiny=False)
    assert "cv=10" in msg and "at most 9" in msg
    msg = train_error_in_process(
        tmp_path / "b", *FOLDER, f"data.root={faces38}", "cv=3", "data.test_identities=5", tiny=False
    )
    assert "cv=3 chooses each run's test people" in msg


def test_an_interval_from_few_people_says_so():
    from facenet_pl.evaluation.verification import interval_note

    assert interval_note(0.0, 1.0, 2, 4).startswith("; wide: only 4 people in 2 folds")
    assert interval_note(0.8, 0.9, 3, 6).startswith("; wide")  # under 5 folds: wide whatever it says
    assert interval_note(0.8, 0.9, 10, 200) == ""
    assert "too few for an interval" in interval_note(float("nan"), float("nan"), 1, 2)


def test_a_small_folder_trained_from_scratch_is_warned_and_a_fine_tuned_one_is_not(faces38, tmp_path, caplog):
    """Through train.py: 26 training people from scratch get the small-folder warning; the same folder started
    from a model (experiment=finetune) does not, and trains at that recipe's learning rate."""
    with caplog.at_level(logging.WARNING, logger="facenet_pl"):
        train_in_process(tmp_path / "scratch", *FOLDER, f"data.root={faces38}", tiny=False)
    assert "26 training people" in caplog.text and "experiment=finetune" in caplog.text
    caplog.clear()
    model = tmp_path / "scratch" / "checkpoints" / "last.ckpt"
    with caplog.at_level(logging.WARNING, logger="facenet_pl"):
        train_in_process(
            tmp_path / "ft",
            "experiment=finetune",
            *FOLDER,
            f"data.root={faces38}",
            f"model.init_from={model}",
            logger=True,
            tiny=False,
        )
    assert "training people" not in caplog.text
    from facenet_pl.inference.model_files import read_checkpoint

    ckpt = read_checkpoint(tmp_path / "ft" / "checkpoints" / "last.ckpt")
    assert ckpt["optimizer_states"][0]["param_groups"][0]["initial_lr"] == 3e-5  # the schedule peaks there


def test_the_small_folder_warning_points_at_a_trained_model_and_at_cv_only_without_it(faces38, tmp_path, caplog):
    """26 training people from scratch: the warning names import-weights; it suggests cv=5 unless the run's test
    people were named (as cv=N names each run's), where it would repeat what was done."""
    caplog.set_level(logging.WARNING, logger="facenet_pl")
    train_in_process(tmp_path / "a", *FOLDER, f"data.root={faces38}", tiny=False)
    said = [r.getMessage() for r in caplog.records if "training people" in r.getMessage()]
    assert len(said) == 1 and "import-weights" in said[0] and "cv=5" in said[0]
    caplog.clear()
    named = "[" + ",".join(f"person{i}" for i in range(6)) + "]"
    train_in_process(tmp_path / "b", *FOLDER, f"data.root={faces38}", f"data.test_identities={named}", tiny=False)
    said = [r.getMessage() for r in caplog.records if "training people" in r.getMessage()]
    assert len(said) == 1 and "cv=5" not in said[0]
