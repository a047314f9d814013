"""The base LightningDataModule: PK-batched training identities; validation and test pairs of other identities.

Three identity-disjoint splits: **train** (PK batches), **val** (pairs that pick the best checkpoint and
calibrate the verification threshold) and **test** (pairs reported after training, by ``eval.py`` and in
the README). Nothing measured on the test pairs feeds back into training or model selection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from facenet_pl.data.datasets import collate_batch
from facenet_pl.data.pairs import VerificationSet
from facenet_pl.data.samplers import SAMPLERS, EpochBatchSampler, OfflineTripletSampler, PKSampler, RandomBatchSampler
from facenet_pl.utils.errors import ConfigError

log = logging.getLogger(__name__)

#: ``embed_and_mine(uint8 images, labels) -> (anchors, positives, negatives)`` index tensors into the images.
EmbedAndMine = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


class PKDataLoader(DataLoader):
    """A DataLoader over a batch sampler (:class:`PKSampler`, offline sampler) that knows where training is.

    Lightning calls ``set_epoch`` only on ``loader.sampler`` and ``loader.batch_sampler.sampler``, never on a
    batch sampler, and it creates the first epoch's iterator before it calls either. So the loader asks
    ``position()`` for ``(epoch, batches already trained in it)`` each time an epoch's iteration starts and
    puts the sampler there: a new epoch gets that epoch's batches, a resumed run continues after the last
    batch its checkpoint trained. Without ``position`` it behaves as a plain DataLoader (call
    ``batch_sampler.set_epoch`` yourself). ``state_dict`` makes the loader resumable for Lightning.
    """

    def __init__(self, *args, position: Callable[[], tuple[int, int]] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._position = position

    def __iter__(self):
        if self._position is not None:
            epoch, done = self._position()
            if done >= len(self.batch_sampler):  # that epoch is complete: the next one starts
                epoch, done = epoch + 1, 0
            self.batch_sampler.resume(epoch, done)
            if done:
                log.info("resuming epoch %d after %d of %d batches", epoch, done, len(self.batch_sampler))
        return super().__iter__()

    def state_dict(self) -> dict:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)


def trainer_position(trainer: pl.Trainer) -> tuple[int, int]:
    """``(epoch, batches trained in it)`` from the fit loop's progress, as restored from a checkpoint.

    ``processed`` counts a batch once its optimiser step is done (a checkpoint written in
    ``on_train_batch_end`` has ``completed`` one lower); ``is_last_batch`` marks an epoch that ended.
    """
    epoch = trainer.fit_loop.epoch_progress.current.completed
    batches = trainer.fit_loop.epoch_loop.batch_progress
    done = batches.current.processed
    if done and batches.is_last_batch:
        return epoch + 1, 0
    return epoch, done


def resolve_bins(val_bins, bins_dir: str | None) -> list[Path]:
    """``data.val_bins`` entries as files: a path, or a name (``lfw``) of ``<data.bins_dir>/<name>.bin``; a missing
    file or two sets of one name are one line now, before anything is decoded."""
    if not val_bins:
        return []
    if isinstance(val_bins, str):
        val_bins = [val_bins]
    paths = []
    for entry in val_bins:
        entry = str(entry)
        path = Path(entry).expanduser()
        if not (entry.endswith(".bin") or "/" in entry):
            if not bins_dir:
                raise ConfigError(f"data.val_bins: {entry!r} is a name: set data.bins_dir to the folder of {entry}.bin")
            path = Path(bins_dir).expanduser() / f"{entry}.bin"
        if not path.is_file():
            raise ConfigError(f"data.val_bins: {path} does not exist")
        paths.append(path)
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise ConfigError(f"data.val_bins: two sets named {max(stems, key=stems.count)!r}: their metrics would clash")
    return paths


class FaceDataModule(pl.LightningDataModule):
    """Base: subclasses fill ``train_set`` (with ``.labels``), ``val_split`` and ``test_split``
    (:class:`~facenet_pl.data.pairs.VerificationSet`; ``val_split`` None: no validation, the last epoch is kept).

    Training batches come from a :class:`PKSampler` built per rank, so give the Trainer
    ``use_distributed_sampler=False`` (the configs do): Lightning must not split PK batches.
    Validation images are split across ranks with a plain ``DistributedSampler``; the pair metric
    gathers them back by dataset index.
    """

    def __init__(
        self,
        p: int = 32,
        k: int = 8,
        extra_negatives: int = 0,
        few_images: str = "replace",
        batches_per_epoch: int | None = None,
        val_batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        val_bins: list[str] | None = None,
        bins_dir: str | None = None,
        sampler: str = "pk",
    ) -> None:
        super().__init__()
        if sampler not in SAMPLERS:
            raise ConfigError(f"data.sampler={sampler!r}: expected one of {', '.join(SAMPLERS)}")
        #: Training batches: ``pk`` (:class:`PKSampler`) or ``random`` (:class:`RandomBatchSampler`, same batch size).
        self.sampler = sampler
        #: insightface ``.bin`` sets also validated every epoch (``val/<name>/acc``): paths, or names in ``bins_dir``.
        self.val_bins = resolve_bins(val_bins, bins_dir)
        self._bin_splits: list[tuple[str, VerificationSet]] | None = None
        self._train_counts: tuple[int, int] | None = None
        self.p, self.k, self.extra_negatives = p, k, extra_negatives
        self.few_images, self.batches_per_epoch = few_images, batches_per_epoch
        self.val_batch_size, self.num_workers, self.seed = val_batch_size, num_workers, seed
        self.train_set: Dataset | None = None
        self.val_split: VerificationSet | None = None
        self.test_split: VerificationSet | None = None
        self._train_sampler: EpochBatchSampler | None = None
        #: DataLoader options of the training loader (data modules that decode in workers set them).
        self.pin_memory, self.prefetch_factor = False, None
        #: ``(miner.offline settings, embed_and_mine)`` once :meth:`use_offline_mining` was called.
        self._offline: tuple[dict, EmbedAndMine] | None = None

    def _world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.world_size, t.global_rank) if t is not None else (1, 0)

    def _loader_generator(self) -> torch.Generator:
        """A DataLoader draws its workers' base seed from this, not from the global random state: the
        training step's augmentation draws from that one, and a resumed run must find it as it was saved."""
        return torch.Generator().manual_seed(self.seed)

    def train_batches_per_epoch(self) -> int:
        """Training batches in one epoch on this rank (before ``trainer.limit_train_batches``)."""
        return len(self._batch_sampler())

    def _batch_sampler(self) -> PKSampler | RandomBatchSampler:
        world, rank = self._world()
        if self.sampler == "random":
            return RandomBatchSampler(
                len(self.train_set),
                self.p * self.k + self.extra_negatives,
                batches_per_epoch=self.batches_per_epoch,
                num_replicas=world,
                rank=rank,
                seed=self.seed,
            )
        return PKSampler(
            self.train_set.labels,
            p=self.p,
            k=self.k,
            extra_negatives=self.extra_negatives,
            few_images=self.few_images,
            batches_per_epoch=self.batches_per_epoch,
            num_replicas=world,
            rank=rank,
            seed=self.seed,
        )

    def use_offline_mining(self, cfg: dict, embed_and_mine: EmbedAndMine) -> None:
        """Train on triplets mined offline (``miner.offline`` settings ``cfg``): ``embed_and_mine(images, labels)``
        embeds a uint8 subset with the current model and returns its triplets. The model hands this over
        once, in its ``setup``; the data module never reaches into the model."""
        self._offline = (dict(cfg), embed_and_mine)

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        sampler: EpochBatchSampler = self._batch_sampler()
        t = self.trainer
        if self._offline is not None:
            sampler = self._offline_sampler(*self._offline, len(sampler), world, rank)
        self._train_sampler = sampler
        return PKDataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_batch,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor if self.num_workers > 0 else None,
            position=(lambda: trainer_position(t)) if t is not None else None,
            generator=self._loader_generator(),
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Guard: a training batch must come from the epoch the trainer is in (else batches repeat)."""
        t = self.trainer
        s = self._train_sampler
        if t is not None and t.training and s is not None and s.epoch != t.current_epoch:
            raise RuntimeError(
                f"the training sampler is at epoch {s.epoch} but the trainer at epoch {t.current_epoch}: batches "
                "would repeat. This Lightning version iterates the train loader in an order facenet-pl does not "
                "know; please report it with your pytorch-lightning version."
            )
        return batch

    def _offline_sampler(
        self, cfg: dict, embed_and_mine: EmbedAndMine, batches_per_epoch: int, world: int, rank: int
    ) -> OfflineTripletSampler:
        """Batches of triplets mined offline by the module on PK subsets (``miner.offline``)."""
        try:
            subsets = PKSampler(
                self.train_set.labels,
                p=int(cfg.get("subset_identities", 128)),
                k=int(cfg.get("images_per_identity", 8)),
                few_images=self.few_images,
                batches_per_epoch=1,
                num_replicas=world,
                rank=rank,
                seed=self.seed + 1,
            )
        except ConfigError as e:
            raise ConfigError(
                f"offline mining subset (miner.offline.subset_identities x images_per_identity): {e} "
                "Lower miner.offline.subset_identities."
            ) from None

        def mine(idx: np.ndarray):
            images, labels, _ = self.train_set.__getitems__(idx)
            return tuple(t.cpu().numpy() for t in embed_and_mine(images, labels))

        per_batch = cfg.get("triplets_per_batch") or max((self.p * self.k + self.extra_negatives) // 3, 1)
        return OfflineTripletSampler(
            subsets,
            mine,
            every_n_steps=int(cfg["every_n_steps"]),
            triplets_per_batch=int(per_batch),
            batches_per_epoch=batches_per_epoch,
            seed=self.seed,
        )

    def resolved_settings(self) -> dict[str, int]:
        """What the run used where the config may say ``auto`` or leave it to the data: P, K, batches per epoch
        (on this rank) and how many people train, validate and test. Stored in checkpoints and metrics.json."""
        out: dict[str, int] = {"p": int(self.p), "k": int(self.k)}
        if self.train_set is not None:
            if self._train_counts is None:  # once per run: checkpoints ask every time they are written
                sampler = self._train_sampler if self._train_sampler is not None else self._batch_sampler()
                labels = torch.as_tensor(self.train_set.labels)
                self._train_counts = (len(sampler), int(len(torch.unique(labels))))
            out["batches_per_epoch"], out["train_identities"] = self._train_counts
        for name, split in (("val", self.val_split), ("test", self.test_split)):
            if split is not None:
                out[f"{name}_identities"] = len(split.identities) if split.identities else int(split.people())
        return out

    def identity_splits(self) -> dict[str, list[str]]:
        """Names of the validation and test identities (checkpoints keep them; ``eval.py`` checks them)."""
        return {
            name: list(split.identities)
            for name, split in (("val", self.val_split), ("test", self.test_split))
            if split is not None
        }

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_bins:
            return [] if self.val_split is None else self._pairs_loader(self.val_split)
        main = [] if self.val_split is None else [self._pairs_loader(self.val_split)]
        return main + [self._pairs_loader(split) for _, split in self.bin_splits()]

    def val_loader_names(self) -> list[str]:
        """What each validation loader holds, in order: ``""`` for the held-out people, then the ``.bin`` names."""
        return ([] if self.val_split is None else [""]) + [name for name, _ in self.bin_splits()]

    def bin_splits(self) -> list[tuple[str, VerificationSet]]:
        """``(name, pairs)`` of each ``data.val_bins`` set, decoded once at the size the data is decoded at."""
        if self._bin_splits is None:
            from facenet_pl.data.binsets import bin_verification_set

            size = getattr(self, "decode_size", None) or getattr(self, "image_size", None) or self.cfg.image_size
            workers = int(getattr(self, "decode_workers", 0))  # the data's own decode setting, not a fixed count
            self._bin_splits = [(Path(p).stem, bin_verification_set(p, int(size), workers)) for p in self.val_bins]
        return self._bin_splits

    def test_dataloader(self) -> DataLoader:
        if self.test_split is None:
            raise ConfigError(f"{type(self).__name__} has no test split")
        return self._pairs_loader(self.test_split)

    def _pairs_loader(self, split: VerificationSet) -> DataLoader:
        world, rank = self._world()
        sampler = DistributedSampler(split.dataset, world, rank, shuffle=False) if world > 1 else None
        # In this process (num_workers=0): the pair images are in memory already (decoded or rendered once and
        # kept), so workers would only copy them. And forking workers for every validation while the training
        # loader's persistent workers (and their queue feeder threads) are alive can deadlock the child in
        # CPython's after-fork code: seen once in a DDP test run, rank 1 waiting on a worker stuck in fork.
        return DataLoader(
            split.dataset,
            batch_size=self.val_batch_size,
            sampler=sampler,
            num_workers=0,
            collate_fn=collate_batch,
            generator=self._loader_generator(),
        )
