"""``facenet-pl embed``, ``verify``, ``calibrate``, ``cluster``, ``plot``: a trained model applied to photos."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from facenet_pl.cli.common import (
    CLIError,
    atomic_output,
    collect_images,
    embed_files,
    no_overwrite,
)


def cmd_embed(a) -> None:
    out = Path(a.output)
    no_overwrite(out, a.force)
    _, files, emb = embed_files(a.ckpt, collect_images(a.inputs, a.include, a.exclude), a.flip, aligned=a.aligned)
    names = [str(f) for f in files]
    if out.suffix == ".npy":
        with atomic_output(out.with_suffix(".files.txt")) as tmp:
            tmp.write_text("\n".join(names) + "\n")
        with atomic_output(out) as tmp:  # the embeddings last: they are what a rerun checks for
            np.save(tmp, emb.astype(np.float32))
        print(f"wrote {out} ({emb.shape[0]} x {emb.shape[1]}) and {out.with_suffix('.files.txt')}")
    elif out.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as e:
            raise CLIError("writing .parquet needs pyarrow: pip install pyarrow (or use -o file.npy)") from e
        table = pa.table({"file": names, "embedding": [row.tolist() for row in emb.astype(np.float32)]})
        with atomic_output(out) as tmp:
            pq.write_table(table, tmp)
        print(f"wrote {out} ({emb.shape[0]} rows)")
    else:
        raise CLIError(f"-o {out}: use a .npy or .parquet file name")


def cmd_verify(a) -> None:
    model, files, emb = embed_files(a.ckpt, [Path(a.image1), Path(a.image2)], a.flip, aligned=a.aligned)
    if len(files) != 2:
        raise CLIError("both images must be readable")
    d = float(((emb[0] - emb[1]) ** 2).sum())
    thr = a.threshold if a.threshold is not None else float(model.threshold)
    if math.isnan(thr):
        raise CLIError("this checkpoint has no calibrated threshold (it never validated): pass --threshold")
    res = {"distance": round(d, 6), "threshold": round(thr, 6), "same": d < thr}
    if a.threshold is None:  # say what the stored threshold was calibrated on: it may not suit these images
        cal = getattr(model, "calibration", None) or {}
        res["calibrated_on"] = cal.get("on", "unknown (re-calibrate: facenet-pl calibrate CKPT FOLDER -o OUT)")
        if cal.get("flip") is not None and bool(cal["flip"]) != bool(a.flip if a.flip is not None else model.eval_flip):
            res["warning"] = "the threshold was calibrated with flip averaging " + ("on" if cal["flip"] else "off")
    print(json.dumps(res))


def cmd_calibrate(a) -> None:
    """Fit the verification threshold on pairs of a labelled folder (root/<identity>/<images>) and store it."""
    from facenet_pl.data.images import scan_identity_folders
    from facenet_pl.evaluation.splits import calibrate_threshold
    from facenet_pl.inference.model_files import save_calibrated

    out = Path(a.output)
    no_overwrite(out, a.force)
    if out.suffix not in (".ckpt", ".safetensors"):
        raise CLIError(f"-o {out}: use a .ckpt (a copy of the checkpoint) or .safetensors file name")
    if Path(a.ckpt).resolve() == out.resolve():
        raise CLIError("-o must be a new file: the original model is kept as it is")
    paths, labels, names = scan_identity_folders(a.folder, min_images=1)
    model, files, emb = embed_files(a.ckpt, paths, a.flip, aligned=a.aligned)
    keep = np.isin([str(p) for p in paths], [str(f) for f in files])
    labels = labels[keep]
    thr, res, split = calibrate_threshold(
        emb, labels, names, str(Path(a.folder).resolve()), a.folds, a.pairs_per_fold, a.seed, a.far_target
    )
    flip = model.eval_flip if a.flip is None else a.flip
    calibration = {
        **split.describe(),
        "split": "calibrate",
        "flip": flip,
        "accuracy": res["accuracy"],
        "rule": f"FAR <= {a.far_target}" if a.far_target is not None else "best accuracy",
    }
    previous = float(model.threshold)
    model.eval_flip = flip
    with atomic_output(out) as tmp:
        save_calibrated(a.ckpt, model, thr, calibration, tmp)
    print(
        json.dumps(
            {
                "threshold": round(thr, 6),
                "previous_threshold": round(previous, 6),
                "pairs": res["pairs"],
                "identities": res["identities"],
                "folds": res["folds"],
                "kfold_accuracy": round(res["accuracy"], 4),
                "accuracy_ci95": [round(res["accuracy_ci95_low"], 4), round(res["accuracy_ci95_high"], 4)],
                "flip": flip,
                "output": str(out),
            }
        )
    )


def _contact_sheet(paths: list[Path], size: int, out: Path, cols: int = 8) -> None:
    from PIL import Image

    from facenet_pl.data.images import load_image

    rows = math.ceil(len(paths) / cols)
    sheet = Image.new("RGB", (cols * size, rows * size), "white")
    for i, p in enumerate(paths):
        arr = load_image(p, size)
        if arr is not None:
            sheet.paste(Image.fromarray(arr.transpose(1, 2, 0)), ((i % cols) * size, (i // cols) * size))
    sheet.save(out)


def cmd_cluster(a) -> None:
    from facenet_pl.evaluation.clustering import cluster_at_threshold

    out = Path(a.output)
    no_overwrite(out / "clusters.csv", a.force)
    model, files, emb = embed_files(a.ckpt, collect_images([a.folder]), a.flip, aligned=a.aligned)
    thr = None
    if not a.n_clusters:
        thr = a.threshold if a.threshold is not None else float(model.threshold)
        if math.isnan(thr):
            raise CLIError("no calibrated threshold in the checkpoint: pass --threshold or --n-clusters")
    labels = cluster_at_threshold(emb, thr, a.n_clusters)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / "clusters.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "cluster"])
        w.writerows((str(p), int(c)) for p, c in zip(files, labels))
    for c in np.unique(labels):
        _contact_sheet([p for p, k in zip(files, labels) if k == c], 96, out / f"cluster_{int(c):03d}.png")
    print(f"{len(files)} images -> {len(np.unique(labels))} clusters: {out / 'clusters.csv'} and contact sheets")


def cmd_plot(a) -> None:
    from facenet_pl.evaluation.plots import save_tsne

    out = Path(a.output)
    no_overwrite(out, a.force)
    files = collect_images([a.folder])
    _, files, emb = embed_files(a.ckpt, files, a.flip, aligned=a.aligned)
    root = Path(a.folder).resolve()
    ids = [
        p.resolve().relative_to(root).parts[0] if len(p.resolve().relative_to(root).parts) > 1 else "." for p in files
    ]
    save_tsne(emb, ids, out)
    print(f"wrote {out}")
