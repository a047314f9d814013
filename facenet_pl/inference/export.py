"""Export a trained model: ONNX or TorchScript (runtime formats of the network alone, taking normalised
float input) or safetensors (weights + a JSON description: the safe format to share a model in).

Every export is checked: the exported model's embeddings must match PyTorch's (ONNX/TorchScript within
1e-4, safetensors within 1e-6) on random inputs, else the file is removed and an error raised.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from facenet_pl.inference.embed import load_model

TOLERANCE = 1e-4
SAFETENSORS_TOLERANCE = 1e-6
FORMATS = ("onnx", "torchscript", "safetensors")


def _export_safetensors(module, out: Path) -> float:
    from facenet_pl.inference.model_files import load_safetensors_model, save_safetensors

    save_safetensors(module, out)
    x = torch.randn(4, 3, module.input_size, module.input_size)
    with torch.no_grad():
        err = float((load_safetensors_model(out).eval()(x) - module.eval()(x)).abs().max())
    if err > SAFETENSORS_TOLERANCE:
        out.unlink(missing_ok=True)
        raise ValueError(f"the safetensors model differs from the checkpoint by {err:.2e}: not written")
    return err


def model_metadata(module) -> dict[str, str]:
    """What a runtime needs to feed and read the exported network, as strings (ONNX metadata_props,
    TorchScript extra file ``facenet_pl.json``): the network takes float NCHW RGB images already normalised."""
    from facenet_pl.models.normalization import normalization_formula

    norm = normalization_formula(module.normalization)
    cal = getattr(module, "calibration", None) or {}
    return {
        "facenet_pl.input": f"float32 [batch, 3, {module.input_size}, {module.input_size}], RGB, NCHW",
        "facenet_pl.normalization": f"{module.normalization}: {norm}",
        "facenet_pl.crop_size": str(module.crop_size),
        "facenet_pl.preprocess": json.dumps(module.preprocess),
        "facenet_pl.output": f"float32 [batch, {module.net.embedding_dim}], L2-normalised embeddings",
        "facenet_pl.threshold": f"{float(module.threshold):.6g}",
        "facenet_pl.threshold_rule": "same person iff squared Euclidean distance < threshold",
        "facenet_pl.calibrated_on": str(cal.get("on", "unknown")),
        "facenet_pl.flip_averaging": str(bool(module.eval_flip)),
    }


def export_format(out: str | Path, fmt: str | None = None) -> str:
    """The format to write ``out`` in: ``fmt`` if given, else from the file name; ValueError when neither says."""
    out = Path(out)
    fmt = fmt or {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".safetensors": "safetensors"}.get(
        out.suffix
    )
    if fmt not in FORMATS:
        raise ValueError(
            f"cannot tell the format of {out}: use a .onnx/.pt/.safetensors name or --format {'|'.join(FORMATS)}"
        )
    return fmt


def export_model(ckpt: str | Path, out: str | Path, fmt: str | None = None, batch: int = 4) -> float:
    """Write ``out``; return the max absolute embedding difference against PyTorch."""
    out = Path(out)
    fmt = export_format(out, fmt)
    module = load_model(ckpt)
    if fmt == "safetensors":
        return _export_safetensors(module, out)
    net = module.net.eval().to(memory_format=torch.contiguous_format)
    x = torch.randn(batch, 3, module.input_size, module.input_size)
    with torch.no_grad():
        ref = net(x)
    meta = model_metadata(module)
    if fmt == "torchscript":
        with torch.no_grad():
            torch.jit.trace(net, x).save(str(out), _extra_files={"facenet_pl.json": json.dumps(meta)})
            got = torch.jit.load(str(out))(x)
    else:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ValueError("ONNX export needs onnx and onnxruntime: pip install 'facenet-pl[export]'") from e
        torch.onnx.export(
            net,
            (x,),
            str(out),
            input_names=["images"],
            output_names=["embeddings"],
            dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
            dynamo=False,
        )
        import onnx

        proto = onnx.load(str(out))
        onnx.helper.set_model_props(proto, meta)
        onnx.save(proto, str(out))
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {"images": x.numpy()})[0])
    err = float((got - ref).abs().max())
    if err > TOLERANCE:
        out.unlink(missing_ok=True)
        raise ValueError(f"exported {fmt} model differs from PyTorch by {err:.2e} > {TOLERANCE}: not written")
    return err
