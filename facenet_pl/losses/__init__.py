"""Losses: the triplet loss over mined triplets; margin-softmax classification losses; their combination."""

from facenet_pl.losses.classification import (
    CLASSIFICATION_LOSSES,
    ClassificationLoss,
    CombinedLoss,
    check_loss_and_miner,
    loss_parts,
    loss_weights,
    param_groups,
)
from facenet_pl.losses.triplet import TripletLoss, TripletStats

__all__ = [
    "CLASSIFICATION_LOSSES",
    "ClassificationLoss",
    "CombinedLoss",
    "TripletLoss",
    "TripletStats",
    "check_loss_and_miner",
    "loss_parts",
    "loss_weights",
    "param_groups",
]
