"""``FaceNetModule``: the LightningModule that trains an embedding with online triplet mining."""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from facenet_pl.data.augment import build_augment
from facenet_pl.data.images import load_image_settings
from facenet_pl.evaluation import LOGGED_BIN_METRICS, EmbeddingCollector, logged_metrics, score_split
from facenet_pl.losses import (
    ClassificationLoss,
    CombinedLoss,
    check_loss_and_miner,
    loss_parts,
    loss_weights,
    param_groups,
)
from facenet_pl.mining import build_miner
from facenet_pl.mining.cross_rank import gather_batch
from facenet_pl.mining.offline import offline_batch_triplets, offline_settings
from facenet_pl.models import FaceNetEmbedding, compile_network
from facenet_pl.models.normalization import normalize_images
from facenet_pl.training.checkpoint_io import restore_rng_states, rng_states
from facenet_pl.training.guards import (
    CollapseWatch,
    GuardReading,
    TrainingGuards,
    check_finite_distances,
    guard_every,
)
from facenet_pl.training.schedulers import build_optimization
from facenet_pl.utils.config import plain as _plain
from facenet_pl.utils.errors import ConfigError
from facenet_pl.utils.settings import ModelSettings

log = logging.getLogger(__name__)


class FaceNetModule(pl.LightningModule):
    """Embedding network + miner + triplet loss (FaceNet's training step); validates on held-out people's pairs.

    All constructor arguments are plain config dicts (``_target_`` style for miner, loss, optimizer), saved as
    hyperparameters, so ``facenet_pl.inference.embed.load_model(path)`` rebuilds the whole model with no Hydra config
    at hand. The threshold calibrated on the validation pairs is kept in the ``threshold`` buffer and what it was
    calibrated on in ``calibration``: both travel inside the checkpoint, with the training data config
    (``data_config``) and the names of the validation and test identities (``eval.py`` tests the run's own test
    split with them). ``model.eval_flip`` (validation, test, ``eval.py`` and the CLI alike): embed each face as the
    normalised sum of its and its mirror image's embeddings.
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
        backbone, miner, loss = _plain(backbone), _plain(miner), _plain(loss)
        optimizer, scheduler = _plain(optimizer), _plain(scheduler)
        #: ``model.*`` with every key (a model file written with fewer takes the defaults, utils/settings.py).
        self.settings = settings = ModelSettings.from_config(_plain(model))
        self.save_hyperparameters(
            dict(
                backbone=backbone,
                model=settings.as_dict(),
                miner=miner,
                loss=loss,
                optimizer=optimizer,
                scheduler=scheduler,
                far_target=far_target,
                preprocess=_plain(preprocess) or {},
                augment=_plain(augment),
            )
        )
        self.normalization = settings.normalization
        normalize_images(torch.zeros(1, 3, 1, 1), self.normalization)  # fail early on a bad name
        self.input_size = int(backbone["input_size"])
        #: How image files become network input (``load_image`` arguments): crop, fit, grayscale.
        self.preprocess = load_image_settings(preprocess)
        self.crop_size = self.preprocess["crop"]  # centre crop applied to files before resizing
        #: Training-only batch augmentation (``augment`` group); None: none.
        self.augment = build_augment(_plain(augment))
        self.channels_last = bool(settings.channels_last)
        self.net = FaceNetEmbedding(
            backbone=backbone["name"],
            backbone_kwargs=backbone.get("kwargs") or {},
            pretrained=bool(backbone.get("pretrained", False)),
            embedding_dim=settings.embedding_dim,
            dropout=settings.dropout,
            head=settings.head,
        )
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.cross_rank = bool(miner.get("cross_rank", False))
        if settings.compile:
            self.net = compile_network(self.net, settings.compile)
        #: ``miner.offline`` settings when triplets are mined offline (every_n_steps > 0), else None; :meth:`setup`
        #: hands them and :meth:`mine_offline` to the data module (an OfflineTripletSampler draws the batches).
        self.offline_mining = offline_settings(miner)
        self.miner = build_miner(miner)
        self.criterion = instantiate(loss)
        check_loss_and_miner(self.criterion, self.miner)
        #: Sorted training labels: a label's position is its class index (the classifier's row). Set in setup.
        self.register_buffer("class_labels", torch.empty(0, dtype=torch.long), persistent=False)
        self.eval_flip = bool(settings.eval_flip)
        self.max_abs_weight = float(settings.max_abs_weight)
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

    def setup(self, stage: str) -> None:
        """Size a classification loss's class weights from the data module's training identities; hand offline
        mining's embed-and-mine function to the data module before it builds the training loader (Lightning sets
        up the data module, then the model, then restores a checkpoint, builds the optimiser, asks for loaders)."""
        if stage != "fit":
            return
        dm = self.trainer.datamodule if self._trainer is not None else None
        if self.classifier is not None:
            labels = getattr(getattr(dm, "train_set", None), "labels", None)
            self.class_labels = self.classifier.build_for(labels, self.net.embedding_dim).to(self.class_labels.device)
        if not self.offline_mining:
            return
        if dm is None or not hasattr(dm, "use_offline_mining"):
            raise ConfigError(
                "miner.offline.every_n_steps > 0 needs a facenet_pl data module (trainer.fit(model, datamodule=...)) "
                "to draw its mining subsets from"
            )
        dm.use_offline_mining(self.offline_mining, self.mine_offline)

    # -- the loss's parts and inference ----------------------------------------------------
    @property
    def triplet_loss(self) -> torch.nn.Module | None:
        """The loss's triplet part (on mined triplets); None for a classification loss."""
        return loss_parts(self.criterion)[0]

    @property
    def classifier(self) -> ClassificationLoss | None:
        """The loss's classification part (with the class weights); None for the triplet loss."""
        return loss_parts(self.criterion)[1]

    @staticmethod
    def is_training_state(key: str) -> bool:
        """Whether a state-dict key is training-only state (the loss's class weights), absent from model files."""
        return key.startswith("criterion.")

    def embedding_state_dict(self) -> dict[str, torch.Tensor]:
        """The state an embedding model file holds: everything but the loss's class weights (training only)."""
        return {k: v for k, v in self.state_dict().items() if not self.is_training_state(k)}

    def train(self, mode: bool = True) -> FaceNetModule:
        """``model.freeze_bn_stats``: BatchNorm layers stay in eval mode while the rest trains, so they normalise
        with, and keep, their stored statistics."""
        super().train(mode)
        if mode:
            self._freeze_bn_stats()
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning 2.6 never calls train() when fitting (a module starts in training mode; validation restores each
        # layer's own mode), so the freeze is applied here as well
        self._freeze_bn_stats()

    def _freeze_bn_stats(self) -> None:
        settings = getattr(self, "settings", None)
        if settings is not None and settings.freeze_bn_stats:
            for m in self.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

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
            self._note_weights()
            self._check_guards(when=" (the checkpoint was not written)")
        checkpoint["rng_states"] = rng_states()
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
            self._note_weights()
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
        if self._trainer is not None:  # loading for inference leaves the caller's random state alone
            restore_rng_states(checkpoint.get("rng_states"))

    def _inputs(self, images: torch.Tensor, augment: bool) -> torch.Tensor:
        """Normalise a uint8 batch on its device, after the ``augment`` ops when ``augment`` (training)."""
        if augment and self.augment is not None:
            images = self.augment(images)  # at the size the data comes in: a larger cache gives crops more pixels
        return normalize_images(self._at_input_size(images), self.normalization)

    @torch.no_grad()
    def mine_offline(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Embed a subset with the current weights (eval mode, no gradients) and mine it: the offline sampler calls
        it between training steps; the module's train/eval mode is restored."""
        was_training = self.training
        self.eval()
        try:
            chunk = int((self.offline_mining or {}).get("embed_batch_size") or 256)
            pieces = (images[i : i + chunk] for i in range(0, len(images), chunk))  # one on the device at a time
            emb = torch.cat([self(self._inputs(piece.to(self.device), augment=False)) for piece in pieces])
            return self.miner(emb, labels.to(self.device))
        finally:
            self.train(was_training)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels, _ = batch
        x = self._inputs(images, augment=True)
        emb = self(x)
        bs = x.shape[0]
        triplet_w, class_w = loss_weights(self.criterion, self.current_epoch)
        parts, world, stats = [], 1, None
        if triplet_w:
            t_loss, world, stats = self._triplet_part(emb, labels, bs)
            parts.append(t_loss if triplet_w == 1.0 else triplet_w * t_loss)
        if self.classifier is not None:
            # the class weights stay in the graph with weight 0 (triplet phase): DDP expects every parameter used
            c_loss = self.classifier(emb, torch.searchsorted(self.class_labels, labels.to(emb.device)))
            if isinstance(self.criterion, CombinedLoss):  # each part's curve through both phases
                self.log("train/class_loss", c_loss, batch_size=bs)
            parts.append(class_w * c_loss)
        loss = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        # DDP averages gradients over ranks; a triplet loss over the gathered batch reaches only this rank's rows
        returned = loss if world == 1 else loss + (world - 1) * parts[0]
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

    def _triplet_part(self, emb: torch.Tensor, labels: torch.Tensor, bs: int):
        """(triplet loss, the number of ranks whose batches it was mined over, triplet stats)."""
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
        return t_loss, world, stats

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """After the optimiser step: record (on the device) whether a weight or BatchNorm statistic diverged; it is
        read with the other guards (a NaN loss is caught before its step; exploding weights can still give a finite
        loss for a few steps)."""
        self._note_weights()

    def _note_weights(self) -> None:
        """Record (on the device) whether a weight or BatchNorm statistic is non-finite or beyond the limit."""
        named = itertools.chain(self.named_parameters(), self.named_buffers())
        self._training_guards().note_tensors(named, self.global_step - 1)

    def _training_guards(self) -> TrainingGuards:
        if self._guards is None or self._guards.device != self.device:
            self._guards = TrainingGuards(self.device, self.max_abs_weight, self.collapse.spread_max)
            self._guards.every = guard_every(self.settings.guard_every_n_steps, self.device)  # resolved once
        return self._guards

    def _check_guards(self, when: str = "") -> GuardReading | None:
        """Read the guards on the host (the one sync they make): stop on a non-finite loss or a diverged weight
        (:meth:`TrainingGuards.check`); warn about collapse. ``when``: what the read is for."""
        if self._guards is None:
            return None
        r = self._guards.check(self.global_step, when)
        self.collapse.spread_max = max(self.collapse.spread_max, r.spread_max)
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
            self.log_dict(logged_metrics(res, f"val/{name}", LOGGED_BIN_METRICS))

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
        check_finite_distances(d, stage, self.global_step)
        # test: every pair at the validation threshold (the test people choose nothing); val: k-fold on its own pairs
        val_threshold = float(self.threshold) if stage == "test" else None
        res = score_split(split, d, far_target=self.far_target, val_threshold=val_threshold)
        self.last_eval[stage] = (d, split, res)
        for name, value in logged_metrics(res, stage).items():
            self.log(name, value, prog_bar=name == f"{stage}/acc")
        return res

    # -- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        groups = param_groups(self, self.classifier)
        return build_optimization(self.hparams.optimizer, self.hparams.scheduler, groups, self.trainer)
