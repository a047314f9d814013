"""``model.*``: the embedding head, input handling, evaluation and training guards, with their defaults written once.

``conf/model/facenet.yaml`` extends :class:`ModelSettings` (Hydra's ConfigStore, ``model/settings``), so a run's
composed ``model`` holds every key below with the default given here unless the YAML or the command line sets it,
and a wrong type is refused by Hydra as it composes (``model.embedding_dim=abc``). A model file that was written
with fewer keys (an imported published model, an earlier version's checkpoint) gets the missing ones from here
(:meth:`ModelSettings.from_config`). Torch-free: ``train.py`` registers it before its config checks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

#: Where conf/model/*.yaml find the schema in their defaults list (``- settings``).
SCHEMA_NAME = "settings"


@dataclasses.dataclass
class ModelSettings:
    """The ``model`` config group's keys and defaults (one line each: the default, then what it does)."""

    #: FaceNet: 128-d, L2-normalised.
    embedding_dim: int = 128
    #: linear: a projection of the backbone's output to embedding_dim | none: the backbone's output is the
    #: embedding (inception_resnet_v1's own 512-d bottleneck, as its published weights were trained).
    head: str = "linear"
    dropout: float = 0.0
    #: Start a new run from another facenet-pl model's network (.ckpt or .safetensors; same backbone and embedding
    #: size): fine-tuning with a new optimiser, schedule and threshold. Ignored on resume (ckpt_path).
    init_from: Optional[str] = None  # noqa: UP045  (OmegaConf reads typing.Optional, not X | None, on 3.10)
    #: fixed: (x - 127.5) / 128 as in FaceNet; imagenet: mean/std; unit: x / 255.
    normalization: str = "fixed"
    #: Embed each face as the normalised sum of its and its mirror's embedding in validation, test, eval.py and the
    #: facenet-pl CLI (one setting everywhere: the stored threshold is calibrated with it). A second forward pass.
    eval_flip: bool = False
    #: BatchNorm layers normalise with their stored running statistics while training and keep them (their scale
    #: and shift still learn): fine-tuning a model whose statistics must not drift toward small batches of a few
    #: people, above all an imported one whose BatchNorm is folded into its convolutions (identity statistics that a
    #: training-mode BatchNorm would replace; experiment=finetune_facenet_casia).
    freeze_bn_stats: bool = False
    #: The network's activations in channels-last memory order (faster convolutions on CPUs and tensor cores).
    channels_last: bool = True
    #: torch.compile the network: true (inductor; helps on GPU; the first steps are slow while it compiles), or a
    #: backend's name (eager, aot_eager: to tell a compiler problem from a model problem); false: no compile.
    compile: Any = False
    #: Stop training (nothing checkpointed) when a weight or BatchNorm statistic is NaN/inf or exceeds this.
    max_abs_weight: float = 1.0e6
    #: Steps between host reads of the guards (non-finite loss, diverged weights, collapse), which are recorded on
    #: the device every step; also read before every checkpoint write. auto: 1 on a CPU, 50 on a GPU (each read
    #: makes the host wait for the device). A bad step stops training within this many steps, never checkpointed.
    guard_every_n_steps: Any = "auto"

    @classmethod
    def from_config(cls, model: Mapping[str, Any] | None) -> ModelSettings:
        """The settings a (plain) ``model`` config or a model file's stored one gives; keys it leaves out take the
        defaults above, keys this version does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (model or {}).items() if k in known})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def store_schemas() -> None:
    """Register :class:`ModelSettings` with Hydra's ConfigStore as ``model/settings`` (what conf/model/facenet.yaml
    extends). Call before Hydra composes a config: train.py, eval.py and tests do, through ``register_hydra``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="model", name=SCHEMA_NAME, node=ModelSettings)
