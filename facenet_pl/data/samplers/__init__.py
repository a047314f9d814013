"""Training batch samplers: one base (epoch, resume position, state), PK batches, offline-mined triplets."""

from facenet_pl.data.samplers.base import EpochBatchSampler
from facenet_pl.data.samplers.offline_triplets import MineFn, OfflineTripletSampler
from facenet_pl.data.samplers.pk import FEW_IMAGES_POLICIES, PKSampler

__all__ = ["EpochBatchSampler", "FEW_IMAGES_POLICIES", "MineFn", "OfflineTripletSampler", "PKSampler"]
