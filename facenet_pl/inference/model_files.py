"""Opening model files without running code from them: checkpoints and safetensors weights.

A ``.ckpt`` is a pickle, and a pickle is a program: ``torch.load(weights_only=False)`` runs whatever
it names. Here every model file is read with ``torch.load(weights_only=True)`` (tensors and plain
containers only) or as ``.safetensors`` (no code at all), and the hyperparameters that rebuild the
network may only name allow-listed ``_target_`` classes (this package, ``torch.optim``, timm), so a
crafted config cannot instantiate ``os.system`` either.

``.safetensors`` files written by :func:`save_safetensors` hold the network's weights and, in the
header's metadata, a JSON ``facenet_pl`` entry: architecture, input size, normalisation, embedding
size and verification threshold. It is the format to share a model in.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any

import torch

from facenet_pl.utils.errors import ConfigError, UnsafeModelFileError
from facenet_pl.utils.fileio import safe_torch_load

log = logging.getLogger(__name__)

#: Module prefixes a ``_target_`` in a model file's hyperparameters may name.
ALLOWED_TARGET_PREFIXES = ("facenet_pl.", "torch.optim.", "timm.")
SAFETENSORS_FORMAT = "facenet_pl.embedding/1"
#: Miner, loss and optimizer a model rebuilt for inference is given (they take no part in embedding).
_INFERENCE_PARTS = {
    "miner": {"_target_": "facenet_pl.mining.SemiHardMiner"},
    "loss": {"_target_": "facenet_pl.losses.TripletLoss"},
    "optimizer": {"_target_": "torch.optim.AdamW"},
}


def check_targets(cfg: Any, where: str = "hyper_parameters") -> None:
    """Raise :class:`UnsafeModelFileError` if any ``_target_`` in ``cfg`` (nested) is outside the allow-list."""
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            path = f"{where}.{key}"
            if key == "_target_":
                if value is None:  # miner=none: nothing to instantiate
                    continue
                if not isinstance(value, str) or not value.startswith(ALLOWED_TARGET_PREFIXES):
                    raise UnsafeModelFileError(
                        f"{path}={value!r} is not allowed in a model file: only classes from "
                        f"{', '.join(p.rstrip('.') for p in ALLOWED_TARGET_PREFIXES)} are instantiated"
                    )
            else:
                check_targets(value, path)
    elif isinstance(cfg, list | tuple):
        for i, value in enumerate(cfg):
            check_targets(value, f"{where}[{i}]")


#: Substrings of ``backbone.kwargs`` keys that make timm read weights from somewhere (a file, a URL, the
#: Hub): a model file carries its own weights, so it may not point the loader at others.
_WEIGHT_SOURCE_KEYS = ("checkpoint", "pretrained", "file", "url", "hub")


def check_backbone_kwargs(hparams: dict[str, Any]) -> None:
    """Refuse ``backbone.kwargs`` that would make timm load weights from another file or the network."""
    kwargs = (hparams.get("backbone") or {}).get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise UnsafeModelFileError(f"hyper_parameters.backbone.kwargs must be a dict, got {type(kwargs).__name__}")
    for key in kwargs:
        if any(bad in str(key).lower() for bad in _WEIGHT_SOURCE_KEYS):
            raise UnsafeModelFileError(
                f"hyper_parameters.backbone.kwargs.{key} is not allowed in a model file: it would make timm load "
                "weights from elsewhere; the file's own weights are used"
            )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with errors that say what is wrong with the file."""
    import zipfile

    if Path(path).is_file() and not zipfile.is_zipfile(path):  # torch.save writes zip archives (torch >= 1.6)
        raise ConfigError(
            f"{path} is not a readable checkpoint (not a PyTorch zip archive: truncated, or another kind of file)"
        )
    ckpt = safe_torch_load(
        path,
        str(path),
        "A facenet-pl checkpoint never does; if you made this file yourself with other code, re-save its "
        "state_dict, or share models as .safetensors (facenet-pl export CKPT -o model.safetensors).",
        "checkpoint",
    )
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ConfigError(f"{path} is not a facenet-pl checkpoint (no state_dict / hyper_parameters in it)")
    return ckpt


def _build(hparams: dict[str, Any], state_dict: dict[str, torch.Tensor], path: Path):
    from facenet_pl.training.module import FaceNetModule

    hparams = dict(hparams)
    # Augmentation is training-only: a model rebuilt for inference never builds it, so whatever the file
    # names there is dropped unread rather than instantiated.
    hparams["augment"] = {"ops": {}}
    check_targets(hparams)
    check_backbone_kwargs(hparams)
    model = dict(hparams.get("model") or {})
    model["compile"] = False  # inference: plain eager module (weights are saved uncompiled)
    hparams["model"] = model
    backbone = dict(hparams.get("backbone") or {})
    backbone["pretrained"] = False  # the file holds the weights: never download any
    hparams["backbone"] = backbone
    unknown = sorted(set(hparams) - set(inspect.signature(FaceNetModule.__init__).parameters))
    if unknown:  # settings an earlier version took (0.1.0 keeps no compatibility with unreleased ones)
        raise ConfigError(
            f"{path} was written by another facenet-pl version: its hyper_parameters name "
            f"{', '.join(unknown)}, which this version does not take. Export its network with the version that wrote "
            "it (facenet-pl export CKPT -o model.safetensors: weights, settings and threshold, which this version "
            "reads), or train it again."
        )
    try:
        module = FaceNetModule(**hparams)
        # the loss's class weights (classification losses) are training state: a model for inference has none
        state_dict = {
            k.replace("._orig_mod.", "."): v for k, v in state_dict.items() if not FaceNetModule.is_training_state(k)
        }
        module.load_state_dict(state_dict, strict=True)
    except UnsafeModelFileError:
        raise
    except Exception as e:  # missing keys, wrong shapes, unknown arguments: not one of ours
        raise ConfigError(f"{path} is not a facenet-pl model ({type(e).__name__}: {e})") from None
    return module


def load_checkpoint_model(path: str | Path):
    """Rebuild a :class:`~facenet_pl.training.module.FaceNetModule` from a Lightning checkpoint, safely."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    hparams = ckpt["hyper_parameters"]
    if not isinstance(hparams, dict):
        raise ConfigError(f"{path}: hyper_parameters is a {type(hparams).__name__}, not a dict")
    module = _build(hparams, ckpt["state_dict"], path)
    run = ckpt.get("facenet_pl") or {}
    if not isinstance(run, dict):
        raise ConfigError(f"{path}: the facenet_pl entry is a {type(run).__name__}, not a dict")
    if run.get("data") is not None:
        check_targets(run["data"], "facenet_pl.data")  # eval.py instantiates it
    module.data_config = run.get("data")
    module.identity_splits = dict(run.get("identity_splits") or {})
    module.calibration = dict(run.get("calibration") or {})
    return module


def save_safetensors(module, path: str | Path, source: dict[str, Any] | None = None) -> None:
    """Write the embedding network's weights + a JSON description (``facenet_pl`` metadata) to ``path``;
    ``source``: where the weights came from (an imported published model), kept in the file."""
    from safetensors.torch import save

    hp = module.hparams
    meta = {
        "format": SAFETENSORS_FORMAT,
        "backbone": dict(hp["backbone"]),
        "model": {**dict(hp["model"]), "compile": False},
        "preprocess": dict(hp.get("preprocess") or {}),
        "input_size": module.input_size,
        "crop_size": module.crop_size,
        "normalization": module.normalization,
        "embedding_dim": module.net.embedding_dim,
        "threshold": float(module.threshold),
        "calibration": dict(getattr(module, "calibration", None) or {}),
    }
    source = source or getattr(module, "source", None)
    if source:
        meta["source"] = dict(source)
    tensors = {
        k.replace("._orig_mod.", "."): v.detach().cpu().contiguous() for k, v in module.embedding_state_dict().items()
    }
    # serialised in memory and written as an ordinary file: safetensors' save_file writes through its own
    # mkstemp file (mode 0600, left behind by a kill); the callers make the write atomic (fileio.atomic_output)
    Path(path).write_bytes(save(tensors, metadata={"facenet_pl": json.dumps(meta)}))


def load_safetensors_model(path: str | Path):
    """Rebuild a model from a ``.safetensors`` file written by :func:`save_safetensors`."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("facenet_pl")
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a readable .safetensors file ({e})") from None
    if raw is None:
        raise ConfigError(f"{path} has no facenet_pl metadata: write it with facenet-pl export --format safetensors")
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: its facenet_pl metadata is not a JSON object: not a facenet-pl model file")
    if meta.get("format") != SAFETENSORS_FORMAT:
        raise ConfigError(f"{path}: unknown format {meta.get('format')!r} (expected {SAFETENSORS_FORMAT})")
    for key, kind in (
        ("backbone", dict),
        ("model", dict),
        ("preprocess", (dict, type(None))),
        ("calibration", (dict, type(None))),
    ):
        if not isinstance(meta.get(key), kind):
            raise ConfigError(
                f"{path}: its facenet_pl metadata has no valid {key!r} entry: not a facenet-pl model file"
            )
    if not isinstance(meta["backbone"].get("name"), str):
        raise ConfigError(f"{path}: its facenet_pl metadata names no backbone (backbone.name): not a facenet-pl model")
    hparams = {
        "backbone": meta["backbone"],
        "model": meta["model"],
        "preprocess": meta.get("preprocess") or {},
        **_INFERENCE_PARTS,
    }
    module = _build(hparams, tensors, path)
    module.calibration = dict(meta.get("calibration") or {})
    if isinstance(meta.get("source"), dict):  # an imported published model: kept through calibrate and export
        module.source = dict(meta["source"])
    return module


def load_model_file(path: str | Path):
    """A checkpoint (``.ckpt``) or shared weights (``.safetensors``) -> FaceNetModule, without running code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):  # safetensors: u64 size, JSON
        return load_safetensors_model(path)
    return load_checkpoint_model(path)


def save_calibrated(src: str | Path, module, threshold: float, calibration: dict[str, Any], out: str | Path) -> None:
    """Write a new model file with ``threshold`` and what it was calibrated on; ``src`` is left as it is.

    ``out``: ``.ckpt`` (a copy of the checkpoint ``src``, everything else unchanged) or ``.safetensors``.
    """
    from facenet_pl.training.checkpoint_io import atomic_torch_save

    out = Path(out)
    module.threshold.fill_(float(threshold))
    module.calibration = dict(calibration)
    model_hp = dict(module.hparams["model"])
    model_hp["eval_flip"] = bool(module.eval_flip)  # the setting the threshold was calibrated with
    module.hparams["model"] = model_hp
    if out.suffix == ".safetensors":
        save_safetensors(module, out)
        return
    if Path(src).suffix == ".safetensors":
        raise ConfigError(f"{src} is a .safetensors file: write the calibrated model as .safetensors too")
    ckpt = read_checkpoint(src)
    ckpt["state_dict"]["threshold"] = torch.tensor(float(threshold), dtype=ckpt["state_dict"]["threshold"].dtype)
    ckpt["hyper_parameters"]["model"] = {
        **dict(ckpt["hyper_parameters"].get("model") or {}),
        "eval_flip": model_hp["eval_flip"],
    }
    run = dict(ckpt.get("facenet_pl") or {})
    run["calibration"] = dict(calibration)
    ckpt["facenet_pl"] = run
    atomic_torch_save(ckpt, out)


def synthetic_only_warning(model: Any) -> str | None:
    """What to say of a model that has only seen the built-in synthetic faces (its distances and threshold mean
    little on photos), or None."""
    target = str((getattr(model, "data_config", None) or {}).get("_target_", ""))
    if not target.endswith("SyntheticFaceDataModule"):
        return None
    return (
        "this model was trained on the built-in synthetic faces only; on real photos its distances, threshold and "
        "clusters mean little. Use a trained face model (facenet-pl import-weights dlib -o dlib.safetensors: "
        "docs/trained-models.md) or train on real faces (docs/real-faces.md)"
    )


def init_from_model(module: Any, path: str | Path) -> None:
    """Copy the embedding network of the facenet-pl model file at ``path`` (``.ckpt`` or ``.safetensors``) into
    ``module.net``: fine-tuning starts from it with a new optimiser, schedule and threshold."""
    what = "model.init_from"
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what}={str(path)!r} is not a file")
    try:
        source = load_model_file(path)
    except (ConfigError, FileNotFoundError) as e:
        raise ConfigError(f"{what}: {e}") from None
    net = getattr(module.net, "_orig_mod", module.net)
    src_hp, own_hp = source.hparams, module.hparams
    theirs = {
        "backbone.name": src_hp["backbone"].get("name"),
        "backbone.kwargs": dict(src_hp["backbone"].get("kwargs") or {}),
        "model.embedding_dim": source.net.embedding_dim,
        "model.head": (src_hp["model"] or {}).get("head", "linear"),
    }
    ours = {
        "backbone.name": own_hp["backbone"].get("name"),
        "backbone.kwargs": dict(own_hp["backbone"].get("kwargs") or {}),
        "model.embedding_dim": net.embedding_dim,
        "model.head": (own_hp["model"] or {}).get("head", "linear"),
    }
    differ = [f"{k}={theirs[k]!r} (this run: {ours[k]!r})" for k in theirs if theirs[k] != ours[k]]
    if differ:
        raise ConfigError(f"{what}={path} is another network: {'; '.join(differ)}. Set those keys as the file has them")
    net.load_state_dict(source.net.state_dict())
    warning = synthetic_only_warning(source)
    if warning:
        log.warning("model.init_from=%s: %s", path, warning)
    for key, theirs_v, ours_v in (
        ("backbone.input_size", source.input_size, module.input_size),
        ("model.normalization", source.normalization, module.normalization),
    ):
        if theirs_v != ours_v:
            log.warning(
                "%s: %s=%s in %s, %s in this run: the weights saw other inputs", what, key, theirs_v, path, ours_v
            )
    log.info("model.init_from: started from the network of %s (%s)", path, theirs["backbone.name"])
