"""``data=folder``: any identity-folder dataset (CASIA-WebFace, VGGFace2 layout: root/<identity>/<images>)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from facenet_pl.data.datamodule import FaceDataModule
from facenet_pl.data.datasets import FileFaceDataset, InMemoryFaceDataset, take
from facenet_pl.data.decode_cache import cached_decode
from facenet_pl.data.device_decode import EncodedFaceDataset, check_decode_on, decode_on_device
from facenet_pl.data.file_index import load_index, select_files
from facenet_pl.data.folder_plan import FolderPlan, plan_folder
from facenet_pl.data.images import FIT_MODES, gray_fraction, report_unreadable, scan_identity_folders
from facenet_pl.data.pairs import VerificationSet, identities_with_pairs
from facenet_pl.utils.errors import ConfigError

log = logging.getLogger(__name__)


class FolderDataModule(FaceDataModule):
    """Identity folders, decoded once into a uint8 cache; three identity-disjoint splits.

    ``val_identities`` identities (chosen by seed among those with >= 2 images, or named) give the validation
    pairs (best checkpoint, threshold), ``test_identities`` others the test pairs, the rest train. Each is
    ``auto`` (sized from the data), a count, a fraction (0.1), a list of names or a file of names;
    ``val_identities=0`` means no validation (the last epoch is kept). ``p``/``batches_per_epoch`` may be
    ``auto`` too. All of it is decided from the file list before any image is decoded (:meth:`make_plan`).
    The file list comes from an index kept in ``cache_dir`` (:mod:`facenet_pl.data.file_index`), rescanned only when
    the tree changed (``index_check``: ``files`` stats every file, ``dirs`` only the folders).
    ``include``/``exclude``: glob patterns of files to use / skip; ``fit``: how non-square images become square;
    ``grayscale``: train on gray images.
    :meth:`whole_folder_split` makes every identity a test identity (evaluate a folder the model never saw).
    Unreadable files are skipped and counted with a warning.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 112,
        crop_size: int | None = None,
        fit: str = "crop",
        grayscale: bool = False,
        include: str | list[str] | None = None,
        exclude: str | list[str] | None = None,
        val_identities: int | float | str | list[str] = "auto",
        test_identities: int | float | str | list[str] = "auto",
        val_folds: int = 10,
        val_pairs_per_fold: int = 100,
        min_images: int = 2,
        cache_dir: str | None = ".cache/facenet_pl",
        decode_workers: int = 2,
        index_check: str = "files",
        cache: bool = True,
        decode_on: str = "worker",
        cache_size: int | None = None,
        pin_memory: bool | str = "auto",
        prefetch_factor: int = 2,
        align: bool = False,
        align_template: str = "arcface",
        align_margin: int = 32,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.align, self.align_template, self.align_margin = bool(align), align_template, int(align_margin)
        if self.align:
            from facenet_pl.data.align.templates import check_template

            check_template(align_template, image_size, self.align_margin)
        if fit not in FIT_MODES:
            raise ConfigError(
                f"data.fit={fit!r}: expected one of {', '.join(FIT_MODES)} (how a non-square image "
                "becomes square: centre crop, pad with black, or stretch)"
            )
        self.root, self.image_size, self.crop_size = root, image_size, crop_size
        self.fit, self.grayscale, self.include, self.exclude = fit, bool(grayscale), include, exclude
        self.val_identities, self.test_identities = val_identities, test_identities
        self.val_folds, self.val_pairs_per_fold = val_folds, val_pairs_per_fold
        self.min_images, self.cache_dir, self.decode_workers = min_images, cache_dir, decode_workers
        self.index_check, self.cache, self.decode_on = index_check, bool(cache), decode_on
        check_decode_on(decode_on, self.cache)
        if cache_size is not None and int(cache_size) < int(image_size):
            raise ConfigError(
                f"data.cache_size={cache_size} is smaller than the network input (data.image_size={image_size}): "
                "set it >= the input size (larger keeps pixels for random crops), or null for the input size"
            )
        #: The size images are decoded (and cached) at; the model resizes batches to its input size.
        self.decode_size = int(cache_size) if cache_size is not None else int(image_size)
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        self.prefetch_factor = int(prefetch_factor)
        self._scanned: tuple | None = None
        self._stats: tuple[np.ndarray, np.ndarray] | None = None  # sizes, mtimes of the scanned files (the index)
        self._decoded: dict[bool, tuple] = {}
        self.plan: FolderPlan | None = None
        #: What the data turned out to be (stored in checkpoints): images, identities, share of gray images.
        self.data_summary: dict = {}

    def _scan(self) -> tuple[list, np.ndarray, list[str]]:
        if self._scanned is None:
            if self.align:
                self._scanned = self._aligned_files()
            else:
                index = load_index(self.root, self.cache_dir, self.index_check)
                paths, labels, names, rows = select_files(index, self.min_images, self.include, self.exclude)
                self._stats = (index.sizes[rows], index.mtimes[rows])
                self._scanned = paths, labels, names
        return self._scanned

    def _aligned_files(self) -> tuple[list, np.ndarray, list[str]]:
        """``data.align=true``: the face of every source file, detected (MTCNN), aligned by ``align_template`` and
        cropped once into ``<cache_dir>/aligned-<key>`` at the decode size (kept for later runs; an interrupted run
        continues); returns the crops of the files ``include``/``exclude`` select, as a scan would."""
        import hashlib
        from pathlib import Path

        from facenet_pl.data.align import align_folder, crop_names

        if self.cache_dir is None:
            raise ConfigError("data.align=true writes the aligned crops to data.cache_dir: set it to a folder")
        root = Path(self.root).expanduser()
        paths, labels, names = scan_identity_folders(root, 1, self.include, self.exclude)
        margin = self.align_margin if self.align_template == "box" else 0
        settings = f"{root.resolve()}:mtcnn:{self.align_template}:{self.decode_size}:{margin}"
        out = Path(self.cache_dir).expanduser() / f"aligned-{hashlib.sha1(settings.encode()).hexdigest()[:12]}"
        log.info("data.align=true: aligning the faces of data.root=%s into %s (%d files)", self.root, out, len(paths))
        r = align_folder(
            root,
            out,
            template=self.align_template,
            size=self.decode_size,
            margin=self.align_margin,
            workers=max(1, self.decode_workers),
            device="auto",
            files=paths,
        )
        log.info(
            "aligned %d new face(s) (%s template; %d photo(s) with several faces, the large central one kept), %d "
            "already there; %d file(s) without a detectable face and %d unreadable skipped (listed in %s)",
            r["aligned"],
            self.align_template,
            r["several_faces"],
            r["already_there"],
            r["no_face"],
            r["unreadable"],
            out / "align_report.json",
        )
        crops = [out / name for name in crop_names([p.relative_to(root) for p in paths])]
        have = np.array([c.exists() for c in crops], bool)
        ids, counts = np.unique(labels[have], return_counts=True)
        keep_ids = ids[counts >= self.min_images]
        keep = have & np.isin(labels, keep_ids)
        if not keep.any():
            raise ConfigError(
                f"data.align=true: no identity of data.root={self.root} has {self.min_images} images "
                f"with a detectable face (see {out / 'align_report.json'})"
            )
        relabel = {old: new for new, old in enumerate(keep_ids)}
        return (
            [c for c, k in zip(crops, keep) if k],
            np.array([relabel[v] for v in labels[keep]], np.int64),
            [names[i] for i in keep_ids],
        )

    def _decode(self, held_out_only: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """(images, labels of readable rows, readable rows, identity names), decoded once. ``held_out_only``: only
        the files of the validation and test identities, in memory (``data.cache=false``: training files are
        decoded as they are drawn)."""
        if self._decoded.get(held_out_only) is None:
            paths, labels, names = self._scan()
            sel = np.arange(len(paths))
            if held_out_only:
                plan = self.make_plan()
                sel = np.flatnonzero(np.isin(labels, np.concatenate([plan.val_ids, plan.test_ids])))
                paths = take(paths, sel)
            stats = None if self._stats is None else (self._stats[0][sel], self._stats[1][sel])
            images, ok = cached_decode(
                paths,
                self.decode_size,
                self.crop_size,
                self.cache_dir if self.cache and not held_out_only else None,
                self.decode_workers,
                source=str(self.root),
                fit=self.fit,
                grayscale=self.grayscale,
                stats=stats,
            )
            report_unreadable(paths, ok, f"data.root={self.root}")
            rows = np.flatnonzero(ok)
            self._decoded[held_out_only] = images, labels[sel][rows], rows, names
            self._summarise(images, rows, names)
        return self._decoded[held_out_only]

    def _summarise(self, images: np.ndarray, rows: np.ndarray, names: list[str]) -> None:
        gray = gray_fraction(images, rows, seed=self.seed)
        self.data_summary = {
            "root": str(self.root),
            "images": int(len(rows)),
            "identities": len(names),
            "gray_fraction": round(gray, 4),
            "grayscale": self.grayscale,
            "fit": self.fit,
        }
        if self.grayscale:
            return
        if gray >= 0.99:
            log.info(
                "data.root=%s: the images are gray (%.0f%% of a sample have 3 equal channels): the model "
                "learns gray faces; set data.grayscale=true to make colour inputs gray at test time too",
                self.root,
                100 * gray,
            )
        elif gray > 0.01:
            log.warning(
                "data.root=%s mixes gray and colour images (%.0f%% gray): colour becomes a cue to identity. "
                "Set data.grayscale=true to train (and test) on gray images",
                self.root,
                100 * gray,
            )

    def _pairs(self, images, labels, rows, names, ids, what: str, key: str) -> VerificationSet:
        keep = np.isin(labels, ids)
        return VerificationSet.draw(
            InMemoryFaceDataset(images, labels[keep], rows=rows[keep]),
            labels[keep],
            [names[i] for i in np.sort(ids)],
            self.val_folds,
            self.val_pairs_per_fold,
            self.seed,
            name=f"{what} of {self.root}",
            key=key,
        )

    def make_plan(self) -> FolderPlan:
        """Scan the folder (no decoding), derive the ``auto`` settings, check them, and say what was chosen."""
        if self.plan is None:
            _, labels, names = self._scan()
            world, _ = self._world()
            self.plan = plan_folder(
                labels,
                names,
                str(self.root),
                val_identities=self.val_identities,
                test_identities=self.test_identities,
                p=self.p,
                k=self.k,
                extra_negatives=self.extra_negatives,
                few_images=self.few_images,
                batches_per_epoch=self.batches_per_epoch,
                val_folds=self.val_folds,
                world_size=world,
                seed=self.seed,
            )
            self.p, self.batches_per_epoch = self.plan.p, self.plan.batches_per_epoch
            log.info(self.plan.message)
        return self.plan

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """``data.decode_on=device``: the training batch arrives as encoded JPEGs; decode it on the device the
        model trains on (nvjpeg on CUDA), before Lightning moves the batch there."""
        images, labels, idx = batch
        if isinstance(images, list):
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            images = decode_on_device(images, device, self.decode_size, self.crop_size, self.fit, self.grayscale)
        return images, labels, idx

    def prepare_data(self) -> None:
        """Scan the folder and build the decoded-image cache once, before the ranks set up: Lightning calls this on
        one process per node, then waits at a barrier, so the DDP ranks only open the cache (a lock in the cache
        folder makes concurrent builders, e.g. nodes sharing one filesystem, wait for one another too)."""
        if self.cache_dir is not None:
            self._decode(held_out_only=not self.cache)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        plan = self.make_plan()
        images, labels, rows, names = self._decode(held_out_only=not self.cache)
        keep_train = np.isin(labels, plan.train_ids)
        if self.cache:
            self.train_set = InMemoryFaceDataset(images, labels[keep_train], rows=rows[keep_train])
        else:  # decoded from the files as batches are drawn, in the DataLoader workers (data.num_workers)
            paths, all_labels, _ = self._scan()
            tr = np.flatnonzero(np.isin(all_labels, plan.train_ids))
            train_paths = take(paths, tr)
            dataset = EncodedFaceDataset if self.decode_on == "device" else FileFaceDataset
            self.train_set = dataset(
                train_paths, all_labels[tr], self.decode_size, self.crop_size, self.fit, self.grayscale
            )
            keep_train = np.isin(all_labels, plan.train_ids)
            if self.num_workers == 0:
                log.warning(
                    "data.cache=false with data.num_workers=0: every training image is decoded in the training "
                    "process, between steps. Set data.num_workers to the CPU cores you can spare"
                )
        self.val_split = (
            self._pairs(images, labels, rows, names, plan.val_ids, "validation identities", "data.val_identities")
            if len(plan.val_ids)
            else None
        )
        self.test_split = (
            self._pairs(images, labels, rows, names, plan.test_ids, "test identities", "data.test_identities")
            if len(plan.test_ids)
            else None
        )
        log.info(
            "folder %s: %d train images (%d ids), %d val ids, %d test ids",
            self.root,
            int(keep_train.sum()),
            len(plan.train_ids),
            len(plan.val_ids),
            len(plan.test_ids),
        )

    def whole_folder_split(self) -> VerificationSet:
        """Every identity with >= 2 readable images as test identities: pairs over the whole folder."""
        images, labels, rows, names = self._decode()
        return self._pairs(
            images,
            labels,
            rows,
            names,
            identities_with_pairs(labels),
            "all identities",
            "people with >= 2 readable images",
        )
