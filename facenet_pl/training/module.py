"""``FaceNetModule``: the LightningModule that trains an embedding with online triplet mining."""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from facenet_pl.data.augment import build_augment
from facenet_pl.data.images import DEFAULT_FIT
from facenet_pl.evaluation import EmbeddingCollector, score_split
from facenet_pl.losses import ClassificationLoss, CombinedLoss
from facenet_pl.mining import build_miner
from facenet_pl.mining.cross_rank import gather_batch
from facenet_pl.mining.offline import offline_batch_triplets
from facenet_pl.models import FaceNetEmbedding
from facenet_pl.models.normalization import normalize_images
from facenet_pl.training.guards import (  # noqa: F401  (NonFiniteLossError, DivergedWeightsError: raised from here)
    MAX_ABS_WEIGHT,
    CollapseWatch,
    DivergedWeightsError,
    GuardReading,
    NonFiniteLossError,
    TrainingGuards,
    guard_every,
)
from facenet_pl.training.schedulers import build_scheduler, scheduler_config, total_training_steps
from facenet_pl.utils.config import plain as _plain
from facenet_pl.utils.errors import ConfigError

log = logging.getLogger(__name__)

#: ``evaluate_pairs`` result key -> the name it is logged under (``val/<name>``, ``test/<name>``).
LOGGED_PAIR_METRICS = {
    "accuracy": "acc",
    "accuracy_std": "acc_std",
    "accuracy_ci95_low": "acc_ci95_low",
    "accuracy_ci95_high": "acc_ci95_high",
    "threshold": "threshold",
    "val": "val_at_far",
    "far": "far",
    "auc": "auc",
    "eer": "eer",
    "pairs": "pairs",
    "identities": "identities",
    "folds": "folds",
}


def _loss_parts(criterion) -> tuple[torch.nn.Module | None, ClassificationLoss | None]:
    """(triplet loss, classification loss) of a ``loss`` config: either may be None; any other loss module takes
    mined triplets like the triplet loss."""
    if isinstance(criterion, CombinedLoss):
        return criterion.triplet, criterion.classification
    if isinstance(criterion, ClassificationLoss):
        return None, criterion
    return criterion, None


class FaceNetModule(pl.LightningModule):
    """Embedding network + miner + triplet loss; validates and tests by k-fold pair verification.

    All constructor arguments are plain config dicts (``_target_`` style for miner, loss,
    optimizer), saved as hyperparameters, so ``facenet_pl.inference.embed.load_model(path)`` rebuilds
    the whole model with no Hydra config at hand. The threshold calibrated on the validation pairs
    is kept in the ``threshold`` buffer and what it was calibrated on in ``calibration``, so both
    travel inside the checkpoint, with the training data config (``data_config``) and the names of
    the validation and test identities (``eval.py`` reads them to test the run's own test split).
    ``model.eval_flip`` (one setting for validation, test, ``eval.py`` and the CLI): embed each face
    as the normalised sum of its and its mirror image's embeddings.
    """

    def __init__(
        self,
        backbone: dict,
        model: dict,
        miner: dict,
        loss: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        far_target: float | None = None,
        preprocess: dict | None = None,
        augment: dict | None = None,
    ) -> None:
        super().__init__()
        backbone, model, miner, loss = _plain(backbone), _plain(model), _plain(miner), _plain(loss)
        optimizer, scheduler = _plain(optimizer), _plain(scheduler)
        self.save_hyperparameters(
            dict(
                backbone=backbone,
                model=model,
                miner=miner,
                loss=loss,
                optimizer=optimizer,
                scheduler=scheduler,
                far_target=far_target,
                preprocess=_plain(preprocess) or {},
                augment=_plain(augment),
            )
        )
        self.normalization = model.get("normalization", "fixed")
        normalize_images(torch.zeros(1, 3, 1, 1), self.normalization)  # fail early on a bad name
        self.input_size = int(backbone.get("input_size", 64))
        self.crop_size = (preprocess or {}).get("crop_size")  # centre crop applied to files before resizing
        #: How image files become network input (``load_image`` arguments): crop, fit, grayscale.
        self.preprocess = {
            "crop": self.crop_size,
            "fit": (preprocess or {}).get("fit", DEFAULT_FIT),
            "grayscale": bool((preprocess or {}).get("grayscale", False)),
        }
        #: Training-only batch augmentation (``augment`` group); None: none.
        self.augment = build_augment(_plain(augment))
        self.channels_last = bool(model.get("channels_last", False))
        # the network's own defaults (FaceNetEmbedding) apply to what the config leaves out: written once, there
        self.net = FaceNetEmbedding(
            backbone=backbone["name"],
            backbone_kwargs=backbone.get("kwargs") or {},
            **{k: backbone[k] for k in ("pretrained",) if k in backbone},
            **{k: model[k] for k in ("embedding_dim", "dropout", "head") if k in model},
        )
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.cross_rank = bool(miner.get("cross_rank", False))
        if model.get("compile", False):  # true: inductor; or a torch.compile backend's name (eager, aot_eager, ...)
            backend = model["compile"] if isinstance(model["compile"], str) else "inductor"
            if backend not in torch._dynamo.list_backends(exclude_tags=()):
                raise ConfigError(
                    f"model.compile={backend!r}: not a torch.compile backend (true for inductor, or one of "
                    f"{', '.join(torch._dynamo.list_backends(exclude_tags=()))})"
                )
            self.net = torch.compile(self.net, backend=backend)
        offline = dict(miner.get("offline") or {})
        #: ``miner.offline`` settings when triplets are mined offline (every_n_steps > 0), else None;
        #: :meth:`setup` hands them and :meth:`mine_offline` to the data module, which then draws batches with an
        #: :class:`~facenet_pl.data.samplers.OfflineTripletSampler`.
        self.offline_mining: dict | None = offline if offline.get("every_n_steps") else None
        if self.offline_mining and self.cross_rank:
            raise ConfigError(
                "miner.offline.every_n_steps and miner.cross_rank=true do not combine: offline "
                "triplets are mined per rank on a subset. Set one of them off."
            )
        self.miner = build_miner(miner)
        self.criterion = instantiate(loss)
        if self.classifier is not None and self.triplet_loss is None and self.miner is not None:
            raise ConfigError(
                f"loss={self.classifier.name} is a classification loss: it uses no triplets, so a miner would do "
                f"nothing. Drop miner=... (loss={self.classifier.name} selects miner=none itself)."
            )
        if self.triplet_loss is not None and self.miner is None:
            raise ConfigError("miner=none: the triplet loss needs a miner (miner=semihard, the paper's)")
        #: Sorted training labels: a label's position is its class index (the classifier's row). Set in setup.
        self.register_buffer("class_labels", torch.empty(0, dtype=torch.long), persistent=False)
        self.eval_flip = bool(model.get("eval_flip", False))
        self.max_abs_weight = float(model.get("max_abs_weight", MAX_ABS_WEIGHT))
        #: Steps between host reads of the guards (``auto``: 1 on a CPU, 50 on an accelerator; training/guards.py).
        self.guard_every_n_steps = model.get("guard_every_n_steps", "auto")
        self._guards: TrainingGuards | None = None
        self.far_target = far_target
        #: ``{"val"|"test": (distances, VerificationSet, results)}`` of the last evaluation of each split.
        self.last_eval: dict[str, tuple] = {}
        #: What ``threshold`` was calibrated on (``VerificationSet.describe()``); empty until it is.
        self.calibration: dict[str, Any] = {}
        #: The data config the model was trained with (set by ``train.py``; stored in checkpoints).
        self.data_config: dict[str, Any] | None = None
        #: The whole composed run config, unresolved (set by ``train.py``; stored in checkpoints: a resume
        #: continues with it, :mod:`facenet_pl.run.resume`).
        self.run_config: dict[str, Any] | None = None
        #: Names of the validation and test identities of the training data (read from checkpoints).
        self.identity_splits: dict[str, list[str]] = {}
        #: Watches the batch spread for collapse; its largest spread so far is kept in checkpoints.
        self.collapse = CollapseWatch()
        self.val_embeddings = EmbeddingCollector()
        self._bin_collectors: dict[int, EmbeddingCollector] = {}  # data.val_bins sets, by validation loader
        self.register_buffer("threshold", torch.tensor(float("nan")))

    # -- inference -----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Classification losses: size the class weights from the data module's training identities. Offline
        mining: give the data module this model's embed-and-mine function, once, before it builds the training
        loader. (Lightning sets up the data module first, then the model, then restores a checkpoint, builds the
        optimiser and asks for loaders.)"""
        if stage != "fit":
            return
        dm = self.trainer.datamodule if self._trainer is not None else None
        if self.classifier is not None:
            self._build_classifier(dm)
        if not self.offline_mining:
            return
        if dm is None or not hasattr(dm, "use_offline_mining"):
            raise ConfigError(
                "miner.offline.every_n_steps > 0 needs a facenet_pl data module (trainer.fit(model, datamodule=...)) "
                "to draw its mining subsets from"
            )
        dm.use_offline_mining(self.offline_mining, self.mine_offline)

    @property
    def triplet_loss(self) -> torch.nn.Module | None:
        """The loss's triplet part (on mined triplets); None for a classification loss."""
        return _loss_parts(self.criterion)[0]

    @property
    def classifier(self) -> ClassificationLoss | None:
        """The loss's classification part (with the class weights); None for the triplet loss."""
        return _loss_parts(self.criterion)[1]

    def _build_classifier(self, dm) -> None:
        labels = getattr(getattr(dm, "train_set", None), "labels", None)
        if labels is None:
            raise ConfigError(
                f"loss={self.classifier.name} sizes its class weights from the training identities: it needs a "
                "facenet_pl data module (trainer.fit(model, datamodule=...))"
            )
        classes = torch.unique(torch.as_tensor(np.asarray(labels), dtype=torch.long))
        if not self.classifier.built or self.classifier.num_classes != len(classes):
            self.classifier.build(len(classes), self.net.embedding_dim)
        self.class_labels = classes.to(self.class_labels.device)

    @staticmethod
    def is_training_state(key: str) -> bool:
        """Whether a state-dict key is training-only state (the loss's class weights), absent from model files."""
        return key.startswith("criterion.")

    def embedding_state_dict(self) -> dict[str, torch.Tensor]:
        """The state an embedding model file holds: everything but the loss's class weights (training only)."""
        return {k: v for k, v in self.state_dict().items() if not self.is_training_state(k)}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised network input (N, 3, H, W) -> unit embeddings (N, D)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, flip: bool | None = None) -> torch.Tensor:
        """uint8/float [0, 255] images -> unit embeddings, with this model's normalisation.

        ``flip``: average with the mirror image's embedding (None: ``model.eval_flip``, the setting the
        stored threshold was calibrated with).
        """
        images = self._at_input_size(images.to(self.device))
        return self._embed_eval(normalize_images(images, self.normalization), flip)

    def _at_input_size(self, images: torch.Tensor) -> torch.Tensor:
        """Images of another size (a decode cache kept larger than the network input, ``data.cache_size``) are
        resized to ``backbone.input_size`` on their device (bilinear, antialiased)."""
        if images.shape[-2:] == (self.input_size, self.input_size):
            return images
        return torch.nn.functional.interpolate(
            images.float(), size=(self.input_size, self.input_size), mode="bilinear", antialias=True
        )

    def _embed_eval(self, x: torch.Tensor, flip: bool | None = None) -> torch.Tensor:
        emb = self(x)
        if self.eval_flip if flip is None else flip:
            emb = torch.nn.functional.normalize(emb + self(x.flip(-1)), dim=1)
        return emb

    # -- training --------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._fit_start = time.perf_counter()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the random state (flip augmentation draws from it), so a resumed run continues it exactly;
        and the run's data: its config, the validation/test identities and what the threshold was calibrated on.
        The guards are read first: a checkpoint is never written after a non-finite loss or diverged weight."""
        if self._guards is not None:
            self._guards.note_tensors(
                itertools.chain(self.named_parameters(), self.named_buffers()), self.global_step - 1
            )
            self._check_guards(when=" (the checkpoint was not written)")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["rng_states"] = rng
        dm = self._trainer.datamodule if self._trainer is not None else None
        splits = dm.identity_splits() if hasattr(dm, "identity_splits") else self.identity_splits
        checkpoint["facenet_pl"] = {
            "config": self.run_config,
            "data": self.data_config,
            "identity_splits": splits,
            "calibration": dict(self.calibration),
            "spread_max": self.collapse.spread_max,
            "data_summary": dict(getattr(dm, "data_summary", None) or {}),
            "data_resolved": dm.resolved_settings() if hasattr(dm, "resolved_settings") else {},
            "num_classes": self.classifier.num_classes if self.classifier is not None else 0,
        }

    def on_validation_start(self) -> None:
        """Validation during training reads the guards first: a bad step is named as such, not as NaN distances."""
        if self._guards is not None and not self.trainer.sanity_checking:
            self._guards.note_tensors(
                itertools.chain(self.named_parameters(), self.named_buffers()), self.global_step - 1
            )
            self._check_guards()

    def on_train_end(self) -> None:
        """The last steps since the last guard read are checked too."""
        self._check_guards()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._guards = None  # made again from the restored spread_max
        run = checkpoint.get("facenet_pl") or {}
        self.calibration = dict(run.get("calibration") or {})
        self.collapse.spread_max = float(run.get("spread_max") or 0.0)
        if self.classifier is not None and run.get("num_classes") and not self.classifier.built:
            self.classifier.build(int(run["num_classes"]), self.net.embedding_dim)  # loading without the data
        if run.get("data") is not None and self.data_config is None:
            self.data_config = run["data"]
        rng = checkpoint.get("rng_states")
        if not rng or self._trainer is None:  # loading for inference: leave the caller's random state alone
            return
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def _inputs(self, images: torch.Tensor, augment: bool) -> torch.Tensor:
        """Normalise a uint8 batch on its device, after the ``augment`` ops when ``augment`` (training)."""
        if augment and self.augment is not None:
            images = self.augment(images)  # at the size the data comes in: a larger cache gives crops more pixels
        return normalize_images(self._at_input_size(images), self.normalization)

    @torch.no_grad()
    def mine_offline(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Embed a subset with the current weights (eval mode, no gradients) and mine it.

        Called by the offline sampler between training steps; the module's train/eval mode is restored.
        """
        was_training = self.training
        self.eval()
        try:
            chunk = int((self.offline_mining or {}).get("embed_batch_size") or 256)
            emb = torch.cat(
                [
                    self(self._inputs(images[i : i + chunk].to(self.device), augment=False))
                    for i in range(0, len(images), chunk)
                ]
            )
            return self.miner(emb, labels.to(self.device))
        finally:
            self.train(was_training)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels, _ = batch
        x = self._inputs(images, augment=True)
        emb = self(x)
        bs = x.shape[0]
        triplet_w, class_w = self._loss_weights()
        loss = returned = None
        stats = None
        if triplet_w:
            loss, returned, stats = self._triplet_part(emb, labels, triplet_w, bs)
        if self.classifier is not None:
            # the class weights stay in the graph with weight 0 (triplet phase): DDP expects every parameter used
            c_loss = self.classifier(emb, torch.searchsorted(self.class_labels, labels.to(emb.device)))
            if isinstance(self.criterion, CombinedLoss):  # each part's curve through both phases
                self.log("train/class_loss", c_loss, batch_size=bs)
            loss = class_w * c_loss if loss is None else loss + class_w * c_loss
            returned = class_w * c_loss if returned is None else returned + class_w * c_loss
        guards = self._training_guards()
        guards.note_loss(loss, self.global_step)
        e = emb.detach().float()
        spread = 2 * (1 - e.mean(0).pow(2).sum()).clamp(min=0) if len(e) > 1 else e.new_zeros(())
        nan = e.new_full((), float("nan"))
        guards.note_batch(spread, stats.mean_d_an if stats else nan, stats.mean_d_ap if stats else nan)
        if self.global_step % guards.every == 0:
            self._check_guards()  # before this step's update: a non-finite loss stops here
        self.log("train/loss", loss, prog_bar=self._on_bar, batch_size=bs)
        self.log("train/spread", spread, batch_size=bs)
        return returned

    @property
    def _on_bar(self) -> bool:
        """Whether step values go on the progress bar: Lightning turns them into numbers on every step (a host sync
        on a GPU), so only when there is a bar, on a CPU."""
        return self.device.type == "cpu" and self._trainer is not None and bool(self._trainer.progress_bar_callback)

    def _loss_weights(self) -> tuple[float, float]:
        """(triplet weight, classification weight) of this epoch: host numbers, no device work."""
        if isinstance(self.criterion, CombinedLoss):
            return self.criterion.weights(self.current_epoch)
        return (1.0, 0.0) if self.triplet_loss is not None else (0.0, 1.0)

    def _triplet_part(self, emb: torch.Tensor, labels: torch.Tensor, weight: float, bs: int):
        """(weighted triplet loss to log, the same as the step returns it, triplet stats)."""
        world = 1
        if self.cross_rank:  # mine the global batch; see facenet_pl.mining.cross_rank
            emb, labels, world = gather_batch(emb, labels)
        if self.offline_mining:  # the batch is made of triplets mined offline: [anchors, positives, negatives]
            triplets = offline_batch_triplets(emb.shape[0], emb.device)
        else:
            triplets = self.miner(emb, labels)
        t_loss, stats = self.triplet_loss(emb, triplets)
        if isinstance(self.criterion, CombinedLoss):
            self.log("train/triplet_loss", t_loss, batch_size=bs)
        self.log("train/num_triplets", float(stats.num_triplets), batch_size=bs)
        self.log("train/active_fraction", stats.active_fraction, prog_bar=self._on_bar, batch_size=bs)
        if stats.num_triplets:
            self.log("train/d_ap", stats.mean_d_ap, batch_size=bs)
            self.log("train/d_an", stats.mean_d_an, batch_size=bs)
        else:
            log.warning("step %d: the miner found no triplet (loss 0); check data.p/data.k", self.global_step)
        # DDP averages gradients over ranks; each rank's only reach its own rows
        loss = t_loss if weight == 1.0 else weight * t_loss
        return loss, loss * world if world != 1 else loss, stats

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """After the optimiser step: record (on the device) whether a weight or BatchNorm statistic diverged; it is
        read with the other guards (a NaN loss is caught before its step; exploding weights can still give a finite
        loss for a few steps)."""
        self._training_guards().note_tensors(
            itertools.chain(self.named_parameters(), self.named_buffers()), self.global_step - 1
        )

    def _training_guards(self) -> TrainingGuards:
        if self._guards is None or self._guards.device != self.device:
            self._guards = TrainingGuards(self.device, self.max_abs_weight, self.collapse.spread_max)
            self._guards.every = guard_every(self.guard_every_n_steps, self.device)  # resolved once, not per step
        return self._guards

    def _check_guards(self, when: str = "") -> GuardReading | None:
        """Read the guards on the host (the one sync they make): stop if a loss was non-finite or a weight diverged
        since the run began; warn about collapse. ``when``: what the read is for, e.g. a checkpoint write."""
        if self._guards is None:
            return None
        r = self._guards.read()
        self.collapse.spread_max = max(self.collapse.spread_max, r.spread_max)
        if r.bad_step >= 0 and r.bad_what == "loss":
            stopped = (
                "training stopped before this step's update"
                if r.bad_step == self.global_step
                else f"training stopped at step {self.global_step}; no checkpoint holds weights from that step on"
            )
            raise NonFiniteLossError(
                f"non-finite loss ({r.bad_value}) at step {r.bad_step}: {stopped}{when}. Lower optimizer.lr, set "
                "trainer.gradient_clip_val, or check the inputs."
            )
        if r.bad_step >= 0:
            raise DivergedWeightsError(
                f"training diverged at step {r.bad_step}: {r.bad_what} reached |value| {r.bad_value:.3g} (limit "
                f"model.max_abs_weight={self.max_abs_weight:g}); nothing from this point is checkpointed{when}. Lower "
                "optimizer.lr, set trainer.gradient_clip_val, or use a scheduler with warm-up."
            )
        self._check_collapse(r.spread, r.d_an, r.d_ap)
        return r

    def _check_collapse(self, spread: float, d_an: float, d_ap: float) -> None:
        """Embedding collapse, judged on the batch of each guard read (:class:`CollapseWatch`)."""
        margin = getattr(self.triplet_loss, "margin", None)  # (a classification loss has no triplets: d_an is NaN)
        name = self.classifier.name if self.classifier is not None else None
        self.collapse.check(self.global_step, spread, d_an, d_ap, margin, name, self.triplet_loss is not None)

    # -- validation and test ---------------------------------------------------------------
    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, _, idx = batch
        self._collector(dataloader_idx).update(self._embed_eval(self._inputs(images, augment=False)), idx)

    def _val_loader_names(self) -> list[str]:
        dm = self.trainer.datamodule if self._trainer is not None else None
        return dm.val_loader_names() if hasattr(dm, "val_loader_names") else [""]

    def _collector(self, dataloader_idx: int) -> EmbeddingCollector:
        """The embeddings of validation loader ``dataloader_idx``: the held-out people's (``val_embeddings``, also
        the test phase's), or a ``data.val_bins`` set's (made on first use on the embeddings' device)."""
        if self.trainer.testing or self._val_loader_names()[dataloader_idx] == "":
            return self.val_embeddings
        if dataloader_idx not in self._bin_collectors:
            self._bin_collectors[dataloader_idx] = EmbeddingCollector().to(self.device)
        return self._bin_collectors[dataloader_idx]

    def _bin_metrics(self) -> None:
        """``val/<set>/acc``, ``auc``, ``eer``, ``acc_std`` of each ``data.val_bins`` set (the field's protocol: 10
        consecutive folds, threshold fit on 9). The model's threshold stays the held-out people's."""
        dm = self.trainer.datamodule
        for i, name in enumerate(self._val_loader_names()):
            coll = self._bin_collectors.get(i)
            if not name or coll is None:
                continue
            idx, emb = coll.compute()
            coll.reset()
            split = dict(dm.bin_splits())[name]
            if self.trainer.sanity_checking or idx.numel() != len(split.dataset):
                continue
            res = score_split(split, split.distances(emb), far_target=self.far_target)
            for key, short in (("accuracy", "acc"), ("accuracy_std", "acc_std"), ("auc", "auc"), ("eer", "eer")):
                self.log(f"val/{name}/{short}", float(res[key]))

    def test_step(self, batch, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        if self._bin_collectors:
            self._bin_metrics()
        res = self._pair_metrics("val")
        if res is None:
            return
        self.threshold.fill_(res["threshold"])  # mean of the per-fold thresholds fit on training folds
        self.calibration = {
            **self.last_eval["val"][1].describe(),
            "split": "val",
            "flip": self.eval_flip,
            "accuracy": res["accuracy"],
            "step": int(self.global_step),
        }
        if hasattr(self, "_fit_start"):  # wall time since fit start, to read off "time to X% val/acc"
            self.log("time/elapsed_s", time.perf_counter() - self._fit_start)

    def on_test_epoch_end(self) -> None:
        self._pair_metrics("test")  # test/acc at the stored (validation) threshold, as verify/cluster apply it

    def _pair_metrics(self, stage: str) -> dict[str, Any] | None:
        """Verification table of the ``stage`` split's pairs, logged as ``{stage}/...``; None when skipped."""
        dm = self.trainer.datamodule if self.trainer is not None else None
        split = getattr(dm, f"{stage}_split", None)
        if split is None or self.trainer.sanity_checking:
            self.val_embeddings.reset()
            return None
        idx, emb = self.val_embeddings.compute()
        self.val_embeddings.reset()
        n = len(split.dataset)
        if idx.numel() != n:  # fast_dev_run / limit_val_batches: not every image was embedded
            log.info("%s saw %d of %d images: pair metrics skipped", stage, idx.numel(), n)
            return None
        d = split.distances(emb)
        if not np.isfinite(d).all():
            raise DivergedWeightsError(
                f"{stage}: {int((~np.isfinite(d)).sum())} of {len(d)} pair distances are NaN or inf at step "
                f"{self.global_step}: the network's outputs diverged. Lower optimizer.lr or set "
                "trainer.gradient_clip_val."
            )
        # test: every pair at the validation threshold (the test people choose nothing); val: k-fold on its own pairs
        val_threshold = float(self.threshold) if stage == "test" else None
        res = score_split(split, d, far_target=self.far_target, val_threshold=val_threshold)
        self.last_eval[stage] = (d, split, res)
        for key, name in LOGGED_PAIR_METRICS.items():
            self.log(f"{stage}/{name}", float(res[key]), prog_bar=name == "acc")
        if "accuracy_other_folds_threshold" in res:
            self.log(f"{stage}/acc_other_folds_threshold", float(res["accuracy_other_folds_threshold"]))
        return res

    # -- optimisation ----------------------------------------------------------------------
    def _param_groups(self) -> list[dict[str, Any]]:
        """The network's parameters; the class weights of a classification loss as their own group (their own LR
        with ``loss.classifier_lr``)."""
        if self.classifier is None:
            return [{"params": list(self.parameters())}]
        own = {id(p) for p in self.classifier.parameters()}
        groups = [{"params": [p for p in self.parameters() if id(p) not in own]}]
        group: dict[str, Any] = {"params": list(self.classifier.parameters())}
        if self.classifier.classifier_lr is not None:
            group["lr"] = self.classifier.classifier_lr
        return [*groups, group]

    def configure_optimizers(self):
        opt_cfg = dict(self.hparams.optimizer)
        opt = instantiate(opt_cfg, _partial_=True)(params=self._param_groups())  # param groups stay plain dicts
        if scheduler_config(self.hparams.scheduler) is None:
            return opt
        main = build_scheduler(self.hparams.scheduler, opt, total_training_steps(self.trainer))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": main, "interval": "step"}}
