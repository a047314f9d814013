"""Margin-softmax losses (ArcFace, CosFace, sub-center ArcFace, normalised softmax) from pytorch-metric-learning.

They classify each training image among the training identities against one learned weight vector per identity
(the class weights), with a margin on the angle or the cosine. The class weights exist only while training: their
number comes from the data (:meth:`ClassificationLoss.build`, called by the model's ``setup``), they are in the
optimiser and in checkpoints, and never in an exported embedding model.

The losses themselves are pytorch-metric-learning's (a well-kept, tested library: the formulas, margins and
numerics are theirs, not rewritten here); this module only names them (a registry, so a checkpoint's config names
``arcface``, never a class to import) and sizes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from facenet_pl.utils.errors import ConfigError

#: ``loss.name`` of :class:`ClassificationLoss` (``conf/loss/<name>.yaml``) -> pytorch-metric-learning's class name
#: (imported when a loss is made: the library is not loaded by a triplet run).
_LIBRARY_CLASSES = {
    "arcface": "ArcFaceLoss",
    "cosface": "CosFaceLoss",
    "subcenter_arcface": "SubCenterArcFaceLoss",
    "normalized_softmax": "NormalizedSoftmaxLoss",
}
CLASSIFICATION_LOSSES = tuple(_LIBRARY_CLASSES)


def _library_class(name: str) -> type:
    from pytorch_metric_learning import losses

    return getattr(losses, _LIBRARY_CLASSES[name])


class ClassificationLoss(nn.Module):
    """One of pytorch-metric-learning's classification losses over the training identities.

    ``name``: arcface | cosface | subcenter_arcface | normalized_softmax. ``classifier_lr``: learning rate of the
    class weights (None: ``optimizer.lr``). ``loss_kwargs``: the library's own arguments (``margin``, ``scale``,
    ``sub_centers``, ``temperature``), passed through unchanged. Call :meth:`build` with the number of training
    identities and the embedding size before the first step; ``forward(embeddings, class_indices)`` -> loss.
    """

    def __init__(self, name: str, classifier_lr: float | None = None, **loss_kwargs: Any) -> None:
        super().__init__()
        if name not in CLASSIFICATION_LOSSES:
            raise ConfigError(f"loss.name={name!r}: expected one of {', '.join(CLASSIFICATION_LOSSES)}")
        if classifier_lr is not None and not float(classifier_lr) > 0:
            raise ConfigError(f"loss.classifier_lr must be > 0 (or null: optimizer.lr), got {classifier_lr}")
        self.name, self.loss_kwargs = name, dict(loss_kwargs)
        self.classifier_lr = None if classifier_lr is None else float(classifier_lr)
        self.loss: nn.Module | None = None
        self.num_classes = 0
        self._make(2, 2)  # bad library arguments (a misspelt key) fail now, in one line, not after data loading
        self.loss = None

    def _make(self, num_classes: int, embedding_dim: int) -> nn.Module:
        try:
            return _library_class(self.name)(num_classes=num_classes, embedding_size=embedding_dim, **self.loss_kwargs)
        except TypeError as e:
            raise ConfigError(f"loss={self.name}: {e} (loss.* keys are pytorch-metric-learning's arguments)") from None

    @property
    def built(self) -> bool:
        return self.loss is not None

    def build(self, num_classes: int, embedding_dim: int) -> None:
        """Make the class weights for ``num_classes`` training identities (the library's initialisation)."""
        if num_classes < 2:
            raise ConfigError(f"loss={self.name} needs >= 2 training identities; the data has {num_classes}")
        self.loss = self._make(int(num_classes), int(embedding_dim))
        self.num_classes = int(num_classes)

    def build_for(self, labels: Any, embedding_dim: int) -> torch.Tensor:
        """Class weights for the training identities ``labels`` (kept if already sized for them, e.g. restored from
        a checkpoint); returns the sorted distinct labels: a label's position is its class index (its row)."""
        if labels is None:
            raise ConfigError(
                f"loss={self.name} sizes its class weights from the training identities: it needs a facenet_pl "
                "data module (trainer.fit(model, datamodule=...))"
            )
        classes = torch.unique(torch.as_tensor(np.asarray(labels), dtype=torch.long))
        if not self.built or self.num_classes != len(classes):
            self.build(len(classes), embedding_dim)
        return classes

    def forward(self, embeddings: torch.Tensor, class_indices: torch.Tensor) -> torch.Tensor:
        if self.loss is None:
            raise RuntimeError("ClassificationLoss.build(num_classes, embedding_dim) was not called")
        return self.loss(embeddings.float(), class_indices)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, classes={self.num_classes}, " + ", ".join(
            f"{k}={v!r}" for k, v in self.loss_kwargs.items()
        )


class CombinedLoss(nn.Module):
    """Triplet loss (on mined triplets) + a classification loss, weighted; or one after the other.

    ``classification_epochs`` None: ``triplet_weight * triplet + classification_weight * classification`` every
    step. ``classification_epochs=N``: the first N epochs train the classification loss alone, then the triplet loss
    alone (with the run's miner), each unweighted: the schedule often used on small data, where softmax gives the
    embedding its first shape and triplets refine it.
    """

    def __init__(
        self,
        triplet: nn.Module,
        classification: ClassificationLoss,
        triplet_weight: float = 1.0,
        classification_weight: float = 1.0,
        classification_epochs: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(classification, ClassificationLoss):
            raise ConfigError("loss.classification must be a ClassificationLoss (loss=arcface's settings)")
        if triplet_weight < 0 or classification_weight < 0 or triplet_weight + classification_weight <= 0:
            raise ConfigError(
                f"loss.triplet_weight={triplet_weight}, loss.classification_weight={classification_weight}: both must "
                "be >= 0 and one > 0"
            )
        if classification_epochs is not None and int(classification_epochs) < 0:
            raise ConfigError(f"loss.classification_epochs must be >= 0 or null, got {classification_epochs}")
        self.triplet, self.classification = triplet, classification
        self.triplet_weight, self.classification_weight = float(triplet_weight), float(classification_weight)
        self.classification_epochs = None if classification_epochs is None else int(classification_epochs)

    def weights(self, epoch: int) -> tuple[float, float]:
        """(triplet weight, classification weight) in ``epoch``."""
        if self.classification_epochs is None:
            return self.triplet_weight, self.classification_weight
        # one loss at a time: each at full weight (the weights balance the two only when they are summed)
        return (0.0, 1.0) if epoch < self.classification_epochs else (1.0, 0.0)


def loss_parts(criterion: nn.Module) -> tuple[nn.Module | None, ClassificationLoss | None]:
    """(triplet part, classification part) of a ``loss`` config's module: either may be None; any other loss module
    takes mined triplets like the triplet loss."""
    if isinstance(criterion, CombinedLoss):
        return criterion.triplet, criterion.classification
    if isinstance(criterion, ClassificationLoss):
        return None, criterion
    return criterion, None


def loss_weights(criterion: nn.Module, epoch: int) -> tuple[float, float]:
    """(triplet weight, classification weight) of ``epoch``: host numbers, no device work."""
    if isinstance(criterion, CombinedLoss):
        return criterion.weights(epoch)
    return (1.0, 0.0) if loss_parts(criterion)[0] is not None else (0.0, 1.0)


def check_loss_and_miner(criterion: nn.Module, miner: Any) -> None:
    """A classification loss takes no triplets (a miner beside it would do nothing); a triplet loss needs one."""
    triplet, classification = loss_parts(criterion)
    if classification is not None and triplet is None and miner is not None:
        raise ConfigError(
            f"loss={classification.name} is a classification loss: it uses no triplets, so a miner would do "
            f"nothing. Drop miner=... (loss={classification.name} selects miner=none itself)."
        )
    if triplet is not None and miner is None:
        raise ConfigError("miner=none: the triplet loss needs a miner (miner=semihard, the paper's)")


def param_groups(module: nn.Module, classification: ClassificationLoss | None) -> list[dict[str, Any]]:
    """``module``'s parameters for the optimiser; a classification loss's class weights as their own group (with
    their own learning rate when ``loss.classifier_lr`` is set)."""
    if classification is None:
        return [{"params": list(module.parameters())}]
    own = {id(p) for p in classification.parameters()}
    group: dict[str, Any] = {"params": list(classification.parameters())}
    if classification.classifier_lr is not None:
        group["lr"] = classification.classifier_lr
    return [{"params": [p for p in module.parameters() if id(p) not in own]}, group]
