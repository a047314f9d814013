"""``data=lfw``: LFW View 2, unrestricted protocol, or LFW pairs as the test of outside training data.

The View-2 pairs are the **test** split. Validation (best checkpoint, threshold) uses ``val_identities``
people held out of the training people, so nothing is selected on the reported fold.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from facenet_pl.data.datamodule import FaceDataModule
from facenet_pl.data.datasets import InMemoryFaceDataset
from facenet_pl.data.decode_cache import cached_decode
from facenet_pl.data.images import report_unreadable, scan_identity_folders
from facenet_pl.data.lfw import find_image_ext, find_image_root, image_path, read_pairs, read_people
from facenet_pl.data.pairs import VerificationSet, identities_with_pairs
from facenet_pl.utils.errors import ConfigError

log = logging.getLogger(__name__)


class LFWDataModule(FaceDataModule):
    """LFW pairs as the test; training images from LFW's other folds or from an outside folder.

    - ``fold=i`` (0-9), unrestricted protocol without outside data: train on the people of the nine
      other ``people.txt`` folds; report accuracy on fold i's ``pairs.txt`` pairs at the threshold
      calibrated on the validation people (held out of those folds, never trained on). The threshold fit
      on the other nine folds' pairs (the LFW README's procedure) is biased here, since the model trained
      on their people; it is reported beside it (``test/acc_other_folds_threshold``).
    - ``fold=None`` with ``train_root``: train on an identity-folder dataset (outside data) and
      report the standard 10-fold accuracy over all 6,000 pairs.
    - ``val_identities``: training people (with >= 2 images) held out for validation pairs
      (``val_folds`` x ``val_pairs_per_fold`` pairs); 0: no validation, the last epoch is tested.
    """

    def __init__(
        self,
        root: str,
        pairs_file: str | None = None,
        people_file: str | None = None,
        fold: int | None = 0,
        train_root: str | None = None,
        image_size: int = 96,
        crop_size: int | None = 130,
        cache_dir: str | None = ".cache/facenet_pl",
        decode_workers: int = 2,
        val_identities: int = 100,
        val_folds: int = 10,
        val_pairs_per_fold: int = 100,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.root, self.fold, self.train_root = root, fold, train_root
        self.val_identities, self.val_folds, self.val_pairs_per_fold = val_identities, val_folds, val_pairs_per_fold
        base = Path(root).expanduser()
        self.pairs_file = Path(pairs_file) if pairs_file else base / "pairs.txt"
        self.people_file = Path(people_file) if people_file else base / "people.txt"
        self.image_size, self.crop_size = image_size, crop_size
        self.cache_dir, self.decode_workers = cache_dir, decode_workers

    def _decode(self, paths, what):
        images, ok = cached_decode(
            paths,
            self.image_size,
            self.crop_size,
            self.cache_dir,
            self.decode_workers,
            source=f"{what}, data.root={self.root}",
        )
        report_unreadable(paths, ok, what)
        return images, ok

    def check_training_data(self) -> None:
        """Training with ``fold=None`` needs outside data (evaluating a model trained elsewhere does not)."""
        if self.fold is None and not self.train_root:
            raise ConfigError(
                "data.fold=null evaluates all 10 LFW folds, so training needs outside data: set data.train_root="
                "<identity folders>, or pick a fold (data.fold=0..9) to train on the others"
            )

    def setup(self, stage: str | None = None) -> None:
        if self.test_split is not None:
            return
        if stage != "test":
            self.check_training_data()  # before anything is decoded
        img_root = find_image_root(self.root)
        pairs = read_pairs(self.pairs_file)
        if self.fold is not None and not 0 <= self.fold < pairs.n_folds:
            raise ConfigError(f"data.fold={self.fold} but {self.pairs_file} has folds 0..{pairs.n_folds - 1}")
        # Test: every image named by a pair, once.
        keys = sorted(set(zip(pairs.name1, pairs.num1.tolist())) | set(zip(pairs.name2, pairs.num2.tolist())))
        pos = {k: i for i, k in enumerate(keys)}
        ext = find_image_ext(img_root, *keys[0]) if keys else ".jpg"
        if ext != ".jpg":
            log.info("LFW images under %s are %s files", img_root, ext)
        vpaths = [image_path(img_root, n, i, ext) for n, i in keys]
        missing = [p for p in vpaths if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} images named in {self.pairs_file} are missing under {img_root} "
                f"(e.g. {missing[0]}); is data.root the LFW folder?"
            )
        images, ok = self._decode(vpaths, "LFW pair images")
        if not ok.all():
            raise ConfigError(f"unreadable LFW pair images, e.g. {vpaths[int(np.argmin(ok))]}: re-download LFW")
        names = sorted({n for n, _ in keys})
        label_of = {n: i for i, n in enumerate(names)}
        pair_rows = np.stack(
            [
                [pos[k] for k in zip(pairs.name1, pairs.num1.tolist())],
                [pos[k] for k in zip(pairs.name2, pairs.num2.tolist())],
            ],
            1,
        )
        test_folds = None if self.fold is None else [int(self.fold)]
        what = "LFW View 2, all 10 folds" if self.fold is None else f"LFW View 2 fold {self.fold}"
        tested = np.ones(len(pairs), bool) if test_folds is None else np.isin(pairs.fold, test_folds)
        test_people = sorted({str(n) for n in np.r_[np.asarray(pairs.name1)[tested], np.asarray(pairs.name2)[tested]]})
        self.test_split = VerificationSet(
            InMemoryFaceDataset(images, np.array([label_of[n] for n, _ in keys])),
            pair_rows,
            pairs.issame,
            pairs.fold,
            name=f"{what} ({self.pairs_file})",
            identities=test_people,
            test_folds=test_folds,
            trained_on_other_folds=self.fold is not None,
        )

        if stage == "test" and self.fold is None and not self.train_root:
            return  # eval.py of a model trained elsewhere: the 6,000 pairs are all it needs
        if self.fold is not None:
            people = read_people(self.people_file)
            if len(people) != pairs.n_folds:
                raise ConfigError(f"{self.people_file} has {len(people)} folds, {self.pairs_file} has {pairs.n_folds}")
            train_people = [(n, c) for f, fold in enumerate(people) if f != self.fold for n, c in fold]
            tpaths = [image_path(img_root, n, i, ext) for n, c in train_people for i in range(1, c + 1)]
            tlabels = np.repeat(np.arange(len(train_people)), [c for _, c in train_people])
            present = np.array([p.exists() for p in tpaths])
            if not present.all():
                log.warning(
                    "%d training images listed in %s are missing; skipped", int((~present).sum()), self.people_file
                )
            tpaths = [p for p, k in zip(tpaths, present) if k]
            tlabels = tlabels[present]
            train_names = [n for n, _ in train_people]
            what = f"LFW training folds (all but {self.fold})"
        else:
            tpaths, tlabels, train_names = scan_identity_folders(self.train_root, min_images=2)
            what = f"data.train_root={self.train_root}"
        timgs, tok = self._decode(tpaths, what)
        rows = np.flatnonzero(tok)
        tlabels = tlabels[rows]
        train = np.ones(len(rows), bool)
        if self.val_identities:
            multi = identities_with_pairs(tlabels)
            if len(multi) < self.val_identities + 2:
                raise ConfigError(
                    f"{what} has {len(multi)} people with >= 2 images: lower data.val_identities="
                    f"{self.val_identities} (0: no validation, the last epoch is tested)"
                )
            val_ids = np.sort(np.random.default_rng(self.seed).choice(multi, self.val_identities, replace=False))
            is_val = np.isin(tlabels, val_ids)
            self.val_split = VerificationSet.draw(
                InMemoryFaceDataset(timgs, tlabels[is_val], rows=rows[is_val]),
                tlabels[is_val],
                [train_names[i] for i in val_ids],
                self.val_folds,
                self.val_pairs_per_fold,
                self.seed,
                name=f"{self.val_identities} people held out of the training data ({what})",
                key="data.val_identities",
            )
            train = ~is_val
        self.train_set = InMemoryFaceDataset(timgs, tlabels[train], rows=rows[train])
        log.info(
            "LFW: %d train images (%d ids), %d val ids, %d pair images, %d pairs, test folds %s",
            int(train.sum()),
            len(np.unique(tlabels[train])),
            self.val_identities,
            len(keys),
            len(pairs),
            test_folds or "all",
        )
