"""``facenet-pl import-weights NAME -o MODEL.safetensors``: a published face model as a facenet-pl model file.

The file holds the network's weights and the description every command reads (backbone, input size, embedding
size, normalisation, the alignment it expects, where the weights came from), so ``embed``, ``verify``,
``cluster``, ``calibrate``, ``plot``, ``export``, ``eval.py ckpt_path=`` and ``model.init_from=`` take it as they
take a model trained here. The verification threshold is the one measured for the model on LFW through this
project's pipeline (``benchmarks/README.md``); ``facenet-pl calibrate`` fits one on the user's own people.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facenet_pl.models.published import PUBLISHED, read_published
from facenet_pl.utils.errors import ConfigError

#: Threshold on squared distances between unit embeddings stored in each imported model, and what it was fit on:
#: the mean of the 10 LFW folds' thresholds (each fit on the other 9 folds) measured by
#: ``benchmarks/bench_trained_models.py`` on the deep-funneled LFW with the model's own alignment.
LFW_THRESHOLDS: dict[str, tuple[float, str]] = {
    "facenet-casia": (
        1.2578,
        "LFW (deep-funneled), the 6,000 pairs of pairs.txt, MTCNN crops --template box --size 160 --margin 32: the "
        "mean of the 10 folds' thresholds, each fit on the other 9 (98.77% +- 0.51, flip off; measured 2026-12-07)",
    ),
    "dlib": (
        0.1792,
        "LFW (deep-funneled), the 6,000 pairs of pairs.txt, MTCNN crops --template dlib: the mean of the 10 folds' "
        "thresholds, each fit on the other 9 (98.87% +- 0.39, flip off; measured 2026-12-07)",
    ),
}


def build_published(name: str, source: str | Path | None = None):
    """A :class:`~facenet_pl.training.module.FaceNetModule` holding published model ``name`` (read from ``source`` or
    its installed package), and the file it was read from."""
    from facenet_pl.inference.model_files import _INFERENCE_PARTS
    from facenet_pl.training.module import FaceNetModule

    state, file = read_published(name, source)
    m = PUBLISHED[name]
    module = FaceNetModule(
        backbone={"name": m.backbone, "pretrained": False, "input_size": m.input_size, "kwargs": {}},
        model={"embedding_dim": m.embedding_dim, "head": "none", "normalization": m.normalization, "dropout": 0.0},
        preprocess={"align": dict(m.template)},
        **_INFERENCE_PARTS,
    )
    missing, unexpected = module.net.backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:  # the readers fill every tensor or fail first; this guards a reader's bug
        raise ConfigError(f"{file}: does not fill {m.backbone} ({len(missing)} missing, {len(unexpected)} unexpected)")
    if name in LFW_THRESHOLDS:
        threshold, on = LFW_THRESHOLDS[name]
        module.threshold.fill_(threshold)
        module.calibration = {"on": on}
    return module.eval(), file


def import_published(name: str, out: str | Path, source: str | Path | None = None) -> dict[str, Any]:
    """Write published model ``name`` to ``out`` (``.safetensors``); returns what was written."""
    from facenet_pl.inference.model_files import save_safetensors

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"-o {out}: a facenet-pl model file ends in .safetensors")
    module, file = build_published(name, source)
    m = PUBLISHED[name]
    origin = {"model": name, "package": m.package, "file": str(file), "about": m.about}
    save_safetensors(module, out, source=origin)
    return {**origin, "backbone": m.backbone, "input_size": m.input_size, "embedding_dim": m.embedding_dim,
            "normalization": m.normalization, "template": m.template, "threshold": float(module.threshold)}  # fmt: skip
