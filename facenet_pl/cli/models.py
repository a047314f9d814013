"""``facenet-pl export`` and ``import-weights``: model files in and out."""

from __future__ import annotations

from pathlib import Path

from facenet_pl.cli.common import (
    atomic_output,
    no_overwrite,
)


def cmd_export(a) -> None:
    from facenet_pl.inference.export import export_format, export_model

    out = Path(a.output)
    no_overwrite(out, a.force)
    fmt = export_format(out, a.format)
    with atomic_output(out) as tmp:  # written, checked against PyTorch, then renamed: never half a model file
        err = export_model(a.ckpt, tmp, fmt)
    print(f"wrote {out}; max |embedding difference| vs PyTorch: {err:.2e}")
    if out.suffix != ".safetensors":
        from facenet_pl.inference.embed import load_model
        from facenet_pl.inference.export import model_metadata

        for key, value in model_metadata(load_model(a.ckpt)).items():  # also stored in the file
            print(f"  {key.removeprefix('facenet_pl.')}: {value}")


def cmd_import_weights(a) -> None:
    from facenet_pl.inference.import_weights import import_published

    out = Path(a.output)
    no_overwrite(out, a.force)
    with atomic_output(out) as tmp:
        info = import_published(a.name, tmp, a.source)
    print(f"wrote {out}: {info['about']}")
    print(f"  from {info['file']} ({info['package']})")
    t = info["template"]
    geometry = " ".join(f"--{k} {v}" for k, v in t.items() if k != "template")
    print(
        f"  {info['backbone']}, {info['input_size']} px, {info['embedding_dim']}-d, normalisation "
        f"{info['normalization']}; align photos with: facenet-pl align SRC DST --template {t['template']} {geometry}"
    )
