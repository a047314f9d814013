"""Training batch samplers: one base (epoch, resume position, state), PK batches, random batches, offline triplets."""

from facenet_pl.data.samplers.base import EpochBatchSampler
from facenet_pl.data.samplers.offline_triplets import MineFn, OfflineTripletSampler
from facenet_pl.data.samplers.pk import FEW_IMAGES_POLICIES, PKSampler
from facenet_pl.data.samplers.random_batches import RandomBatchSampler

#: ``data.sampler`` values: PK batches, random batches.
SAMPLERS = ("pk", "random")

__all__ = [
    "SAMPLERS",
    "EpochBatchSampler",
    "FEW_IMAGES_POLICIES",
    "MineFn",
    "OfflineTripletSampler",
    "PKSampler",
    "RandomBatchSampler",
]
