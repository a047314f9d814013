"""LFW protocol parsers and the LFW DataModule on a generated miniature LFW."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facenet_pl.data import LFWDataModule
from facenet_pl.data.images import load_image
from facenet_pl.data.lfw import LFWFormatError, find_image_root, image_path, read_pairs, read_people

from ..lfw_fixture import PEOPLE, make_mini_lfw

#: LFWDataModule settings of the tiny fold-0 runs: no crop, no cache, in-process decoding, P=2 x K=2.
FOLD0 = dict(fold=0, crop_size=None, cache_dir=None, decode_workers=0, p=2, k=2)


@pytest.fixture()
def lfw(tmp_path):
    return make_mini_lfw(tmp_path / "lfw")


def test_read_pairs_official_format(lfw):
    p = read_pairs(lfw / "pairs.txt")
    assert len(p) == 8 and p.n_folds == 2
    assert p.issame.tolist() == [True, True, False, False] * 2
    assert p.fold.tolist() == [0] * 4 + [1] * 4
    assert (p.name1[2], int(p.num1[2]), p.name2[2], int(p.num2[2])) == ("Alice_Able", 3, "Carol_Cole", 1)
    assert (p.name1[4], p.name2[4], int(p.num1[4]), int(p.num2[4])) == ("Eve_Evans", "Eve_Evans", 1, 3)


def test_read_pairs_view1_header(tmp_path):
    f = tmp_path / "pairsDevTest.txt"
    f.write_text("1\nA_B\t1\t2\nA_B\t1\tC_D\t1\n")
    p = read_pairs(f)
    assert len(p) == 2 and p.n_folds == 1 and p.issame.tolist() == [True, False]


@pytest.mark.parametrize(
    "text,match",
    [
        ("2\t1\nA\t1\t2\nA\t1\tB\t1\n", "header promises"),
        ("1\t1\nA\t1\nA\t1\tB\t1\n", r"pairs.txt:2: expected"),
        ("1\t1\nA\t1\tB\t1\nA\t1\t2\n", r"pairs.txt:2: each fold must list"),
        ("x\ty\n", r"pairs.txt:1: header"),
    ],
)
def test_read_pairs_errors_name_file_and_line(tmp_path, text, match):
    f = tmp_path / "pairs.txt"
    f.write_text(text)
    with pytest.raises(LFWFormatError, match=match):
        read_pairs(f)


def test_read_people_both_layouts(lfw, tmp_path):
    assert read_people(lfw / "people.txt") == PEOPLE
    f = tmp_path / "peopleDevTrain.txt"
    f.write_text("2\nA_B\t3\nC_D\t1\n")
    assert read_people(f) == [[("A_B", 3), ("C_D", 1)]]
    f.write_text("2\nA_B\t3\n")
    with pytest.raises(LFWFormatError, match="ended early"):
        read_people(f)


def test_paths_and_root(lfw):
    assert find_image_root(lfw) == lfw / "lfw-deepfunneled"
    assert image_path(lfw / "lfw-deepfunneled", "Bob_Baker", 2).name == "Bob_Baker_0002.jpg"
    with pytest.raises(FileNotFoundError, match="download"):
        find_image_root(lfw / "nope")


def test_fold_mode_trains_on_other_folds_and_indexes_the_right_images(lfw):
    dm = LFWDataModule(root=str(lfw), image_size=32, val_identities=0, **FOLD0)
    dm.setup("fit")
    # Training: fold 1's people only (3 + 2 + 1 + 2 images).
    assert len(dm.train_set) == 8 and len(torch.unique(dm.train_set.labels)) == 4
    test = dm.test_split
    assert dm.val_split is None and test.test_folds == [0] and test.folds.tolist() == [0] * 4 + [1] * 4
    assert test.identities == ["Alice_Able", "Bob_Baker", "Carol_Cole", "Dan_Dale"]  # fold 0's pairs
    pairs = read_pairs(lfw / "pairs.txt")
    root = lfw / "lfw-deepfunneled"
    for (i, j), n1, k1, n2, k2, same in zip(test.pairs, pairs.name1, pairs.num1, pairs.name2, pairs.num2, test.issame):
        img_i = test.dataset.__getitems__([int(i)])[0][0].numpy()
        assert np.array_equal(img_i, load_image(image_path(root, n1, int(k1)), 32))
        img_j = test.dataset.__getitems__([int(j)])[0][0].numpy()
        assert np.array_equal(img_j, load_image(image_path(root, n2, int(k2)), 32))
        assert same == (n1 == n2)


def test_validation_people_are_held_out_of_the_training_folds(tmp_path):
    from ..lfw_fixture import MORE_PEOPLE, make_mini_lfw

    lfw = make_mini_lfw(tmp_path, people=MORE_PEOPLE)
    args = dict(
        root=str(lfw),
        fold=0,
        image_size=32,
        crop_size=None,
        cache_dir=None,
        decode_workers=0,
        p=2,
        k=2,
        val_folds=2,
        val_pairs_per_fold=3,
    )
    dm = LFWDataModule(**args, val_identities=4)
    dm.setup("fit")
    fold1 = {n for n, _ in MORE_PEOPLE[1]}
    val = set(dm.val_split.identities)
    assert len(val) == 4 and val <= fold1  # people of the training fold, never of the test fold
    assert not val & set(dm.test_split.identities)
    names = [n for n, _ in MORE_PEOPLE[1]]
    train_names = {names[int(i)] for i in torch.unique(dm.train_set.labels)}
    assert train_names == fold1 - val  # held out of training: the other 3 + Gina (one image) train
    counts = dict(MORE_PEOPLE[1])
    assert len(dm.train_set) == sum(counts.values()) - sum(counts[n] for n in val)
    assert len(np.unique(dm.val_split.folds)) == 2
    with pytest.raises(ValueError, match="data.val_identities=6"):  # fold 1 has 7 people with >= 2 images
        LFWDataModule(**args, val_identities=6).setup("fit")
    with pytest.raises(ValueError, match="4 identities are the minimum"):
        LFWDataModule(**args, val_identities=3).setup("fit")


def test_missing_images_and_bad_fold_are_clear(lfw):
    with pytest.raises(ValueError, match="data.fold=5"):
        LFWDataModule(root=str(lfw), fold=5, cache_dir=None, decode_workers=0).setup("fit")
    (lfw / "lfw-deepfunneled" / "Bob_Baker" / "Bob_Baker_0002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        LFWDataModule(root=str(lfw), fold=0, cache_dir=None, decode_workers=0).setup("fit")
    with pytest.raises(ValueError, match="train_root"):
        LFWDataModule(root=str(lfw), fold=None, cache_dir=None).setup("fit")


def test_all_ten_folds_can_be_evaluated_without_training_data(lfw):
    """eval.py data=lfw data.fold=null on a model trained elsewhere: every pair tested, nothing to train needed."""
    dm = LFWDataModule(root=str(lfw), fold=None, cache_dir=None, decode_workers=0)
    dm.setup("test")
    assert dm.test_split.test_folds is None and len(dm.test_split.pairs) == len(read_pairs(lfw / "pairs.txt"))
    assert dm.train_set is None


def test_an_aligned_png_tree_is_read_with_the_official_protocol_files(lfw, tmp_path):
    """``facenet-pl align --no-face center`` on the LFW tree keeps every file (as .png; these noise images have
    no face, so all are centre crops), and data=lfw reads that tree with LFW's own pairs.txt / people.txt."""
    pytest.importorskip("cv2")
    pytest.importorskip("facenet_pytorch")
    from facenet_pl.cli.main import main

    out = tmp_path / "aligned"
    assert (
        main(
            ["align", str(lfw / "lfw-deepfunneled"), str(out), "--size", "24", "--no-face", "center", "--device", "cpu"]
        )
        == 0
    )
    n_files = sum(c for fold in PEOPLE for _, c in fold)
    assert len(list(out.rglob("*.png"))) == n_files
    dm = LFWDataModule(
        root=str(out),
        pairs_file=str(lfw / "pairs.txt"),
        people_file=str(lfw / "people.txt"),
        image_size=24,
        val_identities=0,
        **FOLD0,
    )
    dm.setup("fit")
    assert len(dm.train_set) == 8
    pairs = read_pairs(lfw / "pairs.txt")
    test = dm.test_split
    for (i, _), n1, k1 in zip(test.pairs, pairs.name1, pairs.num1):
        img = test.dataset.__getitems__([int(i)])[0][0].numpy()
        assert np.array_equal(img, load_image(image_path(out, n1, int(k1), ".png"), 24))


def test_fold_mode_scores_the_test_fold_at_the_validation_threshold(caplog):
    """Analytic case of an overfit model: the trained-on fold's pairs are pulled together (same 0.1, different
    0.5), the unseen test fold's are not (same 0.8, different 1.6). The other fold's best threshold (between 0.1
    and 0.5) calls every test pair "different": 50%. The validation threshold 1.2 separates them: 100%."""
    from facenet_pl.data.pairs import VerificationSet

    issame = np.tile([True, False], 10)
    d = np.r_[np.where(issame, 0.1, 0.5), np.where(issame, 0.8, 1.6)]
    pairs = np.zeros((40, 2), int)
    folds = np.repeat([0, 1], 20)
    kw = dict(pairs=pairs, issame=np.r_[issame, issame], folds=folds, name="t", test_folds=[1], labels=np.zeros(1))
    from facenet_pl.evaluation import score_split

    plain = score_split(VerificationSet(None, **kw), d)
    assert plain["accuracy"] == 0.5 and "k-fold" in plain["threshold_from"]
    assert "accuracy_other_folds_threshold" not in plain
    split = VerificationSet(None, **kw, trained_on_other_folds=True)
    res = score_split(split, d, val_threshold=1.2)
    assert res["accuracy"] == 1.0 and res["threshold"] == 1.2 and res["accuracy_other_folds_threshold"] == 0.5
    assert res["threshold_from"].startswith("validation people")
    with caplog.at_level("WARNING"):
        res = score_split(split, d, val_threshold=float("nan"))
    assert res["accuracy"] == 0.5 and "biased" in caplog.text and "data.val_identities" in caplog.text
