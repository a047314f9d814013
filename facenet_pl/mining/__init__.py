"""Online triplet miners: ``miner(embeddings, labels) -> (anchor_idx, positive_idx, negative_idx)``."""

from facenet_pl.mining.base import Miner, Triplets, label_masks, pairwise_sq_distances
from facenet_pl.mining.batch_all import BatchAllMiner
from facenet_pl.mining.batch_hard import BatchHardMiner
from facenet_pl.mining.hardest import HardestMiner
from facenet_pl.mining.random_negative import RandomMiner
from facenet_pl.mining.semihard import SemiHardMiner

#: Config names (``miner=<name>``) -> classes.
MINERS: dict[str, type[Miner]] = {
    "semihard": SemiHardMiner,
    "hardest": HardestMiner,
    "random": RandomMiner,
    "batch_hard": BatchHardMiner,
    "batch_all": BatchAllMiner,
}


def build_miner(cfg) -> Miner | None:
    """Instantiate a ``miner`` config (``_target_`` + arguments), leaving out the settings that are about
    where the batch comes from rather than the miner (``offline``, ``cross_rank``). ``miner=none`` (no
    ``_target_``, for classification losses): None."""
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    cfg.pop("offline", None)
    cfg.pop("cross_rank", None)
    if not cfg.get("_target_"):
        return None
    return instantiate(cfg)


__all__ = [
    "MINERS",
    "build_miner",
    "BatchAllMiner",
    "BatchHardMiner",
    "HardestMiner",
    "Miner",
    "RandomMiner",
    "SemiHardMiner",
    "Triplets",
    "label_masks",
    "pairwise_sq_distances",
]
