"""``facenet-pl``: use a trained model from the shell.

facenet-pl embed   CKPT INPUT... -o embeddings.npy      images/folders -> embeddings + file names
facenet-pl verify  CKPT IMG1 IMG2                        distance, same/different at the stored threshold
facenet-pl calibrate CKPT FOLDER -o OUT.ckpt|.safetensors  fit the threshold on a labelled folder, store it
facenet-pl cluster CKPT DIR -o OUT                       group images into identities: CSV + contact sheets
facenet-pl export  CKPT -o model.onnx|.pt|.safetensors  ONNX, TorchScript or shareable safe weights, checked
facenet-pl plot    CKPT DIR -o tsne.png                  2-D t-SNE of embeddings coloured by identity folder
facenet-pl summary MULTIRUN_DIR                          one row per Hydra multirun job, best first
facenet-pl report  MULTIRUN_DIR [--x model/macs_per_image]  ablation table + plot (accuracy vs the swept value)
facenet-pl download lfw --root data/lfw                  MD5-verified LFW download
facenet-pl cache list|prune [--cache-dir DIR]            decoded-image caches: what they hold, remove old ones
facenet-pl align   SRC DST [--template arcface|dlib|box --size N --no-face skip|center]  photos -> aligned face crops
facenet-pl import-weights facenet-casia|dlib -o MODEL.safetensors [--from FILE]  a published trained face model
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("facenet_pl.cli.main")


def atomic_output(path):
    """:func:`facenet_pl.utils.fileio.atomic_output` (imported on use: the CLI starts without heavy imports)."""
    from facenet_pl.utils.fileio import atomic_output as _atomic_output

    return _atomic_output(path)


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _walk_files(folder: Path) -> tuple[list[Path], list[str]]:
    """Every file under ``folder`` (sorted, dot-files left out), following links to folders as training's scan does;
    and the links that lead nowhere or back into a folder already walked (a loop), each listed once."""
    files: list[Path] = []
    broken: list[str] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # a link back into the tree: counted, not walked again
            broken.append(dirpath)
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        for name in filenames:
            f = Path(dirpath) / name
            if name.startswith("."):
                continue
            if f.is_file():
                files.append(f)
            elif f.is_symlink():  # broken: counted, not silently dropped
                broken.append(str(f))
    return sorted(files), broken


def _collect_images(
    inputs: list[str], include: list[str] | None = None, exclude: list[str] | None = None
) -> list[Path]:
    """The files named, and every file under the folders named (hidden ones and non-image kinds such as
    ``align_report.json`` left out and counted); ``include``/``exclude``: globs on a file's path relative to the
    folder it was found in (``*`` crosses folders)."""
    import fnmatch

    from facenet_pl.data.file_index import count_suffixes, is_non_image

    files: list[Path] = []
    skipped: list[str] = []
    broken: list[str] = []
    unlistable: list[str] = []
    filtered = 0
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found, links = _walk_files(p)
            broken += links
            for f in found:
                rel = f.relative_to(p).as_posix()
                if "\n" in f.name or "\r" in f.name:  # .files.txt holds one name per line
                    unlistable.append(repr(f.name))
                elif is_non_image(f.name):
                    skipped.append(f.name)
                elif (include and not any(fnmatch.fnmatchcase(rel, g) for g in include)) or any(
                    fnmatch.fnmatchcase(rel, g) for g in exclude or ()
                ):
                    filtered += 1
                else:
                    files.append(f)
        elif p.is_file():
            if "\n" in p.name or "\r" in p.name:
                raise CLIError(f"{p!r}: a line break in the file name cannot be listed one name per line; rename it")
            files.append(p)
        else:
            raise CLIError(f"{p}: no such file or folder")
    if skipped:
        print(f"skipped {len(skipped)} non-image file(s) ({count_suffixes(skipped)})", file=sys.stderr)
    if broken:
        print(f"skipped {len(broken)} broken or looping link(s) (e.g. {broken[0]})", file=sys.stderr)
    if unlistable:
        print(
            f"skipped {len(unlistable)} file(s) with a line break in the name (e.g. {unlistable[0]}): rename them",
            file=sys.stderr,
        )
    if filtered:
        print(f"left out {filtered} file(s) by --include/--exclude", file=sys.stderr)
    if not files:
        raise CLIError(f"no image files found in {' '.join(inputs)}")
    return files


def _warn_if_synthetic(model) -> None:
    """A model that has only seen the built-in synthetic faces measures little on photos: say so (one line)."""
    from facenet_pl.inference.model_files import synthetic_only_warning

    warning = synthetic_only_warning(model)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _embed_files(ckpt: str, files: list[Path], flip: bool | None, batch_size: int = 256, aligned: bool = True):
    """Embed image files with the model at ``ckpt``. A model that names the alignment it was trained with (an
    imported published model) gets photos detected and cropped that way first, unless ``aligned`` says the files
    are such crops already."""
    import torch

    from facenet_pl.data.images import decode_images
    from facenet_pl.inference.embed import embed_images, load_model

    model = load_model(ckpt)
    _warn_if_synthetic(model)
    flip = model.eval_flip if flip is None else flip
    pre = model.preprocess
    align = dict((model.hparams.get("preprocess") or {}).get("align") or {})
    if align and not aligned:
        from facenet_pl.data.align import align_images

        images, ok = align_images(files, align["template"], model.input_size, int(align.get("margin", 32)))
        what = "unreadable or faceless"
    else:
        images, ok = decode_images(files, model.input_size, pre["crop"], fit=pre["fit"], grayscale=pre["grayscale"])
        what = "unreadable"
    bad = [str(f) for f, k in zip(files, ok) if not k]
    if bad:
        print(f"warning: skipped {len(bad)} {what} file(s): {', '.join(bad[:3])}", file=sys.stderr)
    files = [f for f, k in zip(files, ok) if k]
    if not files:
        raise CLIError("none of the inputs is a readable image")
    x = torch.from_numpy(images[ok])
    emb = torch.cat([embed_images(model, x[i : i + batch_size], flip) for i in range(0, len(x), batch_size)])
    return model, files, emb.cpu().numpy()


def _no_overwrite(path: Path, force: bool) -> None:
    """Refuse, before any work, an output that exists (without ``--force``) or cannot be written."""
    if path.exists() and not force:
        raise CLIError(f"{path} exists: not overwriting it (pass --force to replace it)")
    path = path.expanduser().absolute()
    existing = next(p for p in path.parents if p.exists())  # the folder the output will be created in
    if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        raise CLIError(f"cannot write {path}: {existing} is read-only (or not a writable folder); choose another")


def cmd_embed(a) -> None:
    out = Path(a.output)
    _no_overwrite(out, a.force)
    _, files, emb = _embed_files(a.ckpt, _collect_images(a.inputs, a.include, a.exclude), a.flip, aligned=a.aligned)
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
    model, files, emb = _embed_files(a.ckpt, [Path(a.image1), Path(a.image2)], a.flip, aligned=a.aligned)
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
    _no_overwrite(out, a.force)
    if out.suffix not in (".ckpt", ".safetensors"):
        raise CLIError(f"-o {out}: use a .ckpt (a copy of the checkpoint) or .safetensors file name")
    if Path(a.ckpt).resolve() == out.resolve():
        raise CLIError("-o must be a new file: the original model is kept as it is")
    paths, labels, names = scan_identity_folders(a.folder, min_images=1)
    model, files, emb = _embed_files(a.ckpt, paths, a.flip, aligned=a.aligned)
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
    _no_overwrite(out / "clusters.csv", a.force)
    model, files, emb = _embed_files(a.ckpt, _collect_images([a.folder]), a.flip, aligned=a.aligned)
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


def cmd_export(a) -> None:
    from facenet_pl.inference.export import export_format, export_model

    out = Path(a.output)
    _no_overwrite(out, a.force)
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
    _no_overwrite(out, a.force)
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


def cmd_pack_bin(a) -> None:
    """Pairs of an LFW pairs file, their image files' bytes as they are (JPEG, PNG), in insightface's layout."""
    from facenet_pl.data.binsets import write_bin
    from facenet_pl.data.lfw import find_image_ext, find_image_root, image_path, read_pairs

    out = Path(a.output)
    _no_overwrite(out, a.force)
    pairs = read_pairs(a.pairs)
    root = find_image_root(a.root)
    ext = find_image_ext(root, pairs.name1[0], int(pairs.num1[0]))
    files = [
        image_path(root, name, int(num), ext)
        for i in range(len(pairs))
        for name, num in ((pairs.name1[i], pairs.num1[i]), (pairs.name2[i], pairs.num2[i]))
    ]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise CLIError(f"{len(missing)} image(s) the pairs name are not under {root} (e.g. {missing[0]})")
    if not np.array_equal(pairs.fold, np.repeat(np.arange(pairs.n_folds), len(pairs) // pairs.n_folds)) or (
        pairs.n_folds != 10
    ):
        log.warning("%s has %d folds: a .bin is scored in 10 folds of consecutive pairs", a.pairs, pairs.n_folds)
    with atomic_output(out) as tmp:
        write_bin(tmp, [f.read_bytes() for f in files], pairs.issame.tolist())
    print(f"wrote {out}: {len(pairs)} pairs ({int(pairs.issame.sum())} matched), {len(files)} images from {root}")


def cmd_plot(a) -> None:
    from facenet_pl.evaluation.plots import save_tsne

    out = Path(a.output)
    _no_overwrite(out, a.force)
    files = _collect_images([a.folder])
    _, files, emb = _embed_files(a.ckpt, files, a.flip, aligned=a.aligned)
    root = Path(a.folder).resolve()
    ids = [
        p.resolve().relative_to(root).parts[0] if len(p.resolve().relative_to(root).parts) > 1 else "." for p in files
    ]
    save_tsne(emb, ids, out)
    print(f"wrote {out}")


def cmd_summary(a) -> None:
    from facenet_pl.run.summary import summarize

    print(summarize(a.folder, a.sort, csv_path=a.csv))


def cmd_report(a) -> None:
    from facenet_pl.run.report import make_report

    try:
        rep = make_report(a.folder, a.metric, a.x, a.out, a.force, a.wandb)
    except FileExistsError as e:
        raise CLIError(str(e)) from None
    print(rep.markdown)
    print("wrote " + ", ".join(str(f) for f in rep.files.values()))


def cmd_cache(a) -> None:
    from facenet_pl.data.decode_cache import describe_cache, list_caches, prunable

    directory = Path(a.cache_dir).expanduser()
    if not directory.is_dir():  # a fresh clone: nothing cached yet is not an error
        print(
            f"(no caches: {directory} does not exist yet; the default is data.cache_dir's, .cache/facenet_pl "
            "relative to where train.py ran, or $FACENET_PL_CACHE_DIR)"
        )
        return
    entries = list_caches(directory)
    if a.action == "list":
        print(f"{'key':16}  {'state':11}  {'MB':>8}  {'images':>7}  {'px':>4}  {'created':19}  source")
        for e in entries:
            print(describe_cache(e))
        if not entries:
            print(f"(no caches in {directory})")
        return
    doomed = prunable(entries, a.all)
    if not doomed:
        print(f"nothing to prune in {directory}: every cache is the newest of its data ({len(entries)} kept)")
        return
    total = sum(e.files.nbytes() for e in doomed) / 1e6
    for e in doomed:
        print(f"remove {e.files.key} ({e.state}, {e.files.nbytes() / 1e6:.1f} MB)")
    if a.dry_run:
        print(f"dry run: would free {total:.1f} MB")
        return
    if not a.yes:
        if not sys.stdin.isatty():
            raise CLIError("prune asks before deleting: add --yes to confirm (or --dry-run to see what it would do)")
        if input(f"delete {len(doomed)} cache(s), {total:.1f} MB? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return
    for e in doomed:
        e.files.remove()
    print(f"freed {total:.1f} MB")


def cmd_align(a) -> None:
    from facenet_pl.data.align import align_folder

    logging.getLogger("facenet_pl.data.align").setLevel(logging.INFO)  # progress every 30 s on a long run
    r = align_folder(
        a.src,
        a.dst,
        template=a.template,
        size=a.size,
        margin=a.margin,
        workers=a.workers,
        batch_size=a.batch_size,
        device=a.device,
        force=a.force,
        no_face=a.no_face,
    )
    no_face = (
        f"cropped {r['centered']} without a detectable face at the median face placement"
        if a.no_face == "center"
        else f"skipped {r['no_face']} with no face found"
    )
    geometry = f"{r['size']} x {r['size']} px" + (f", margin {r['margin']} px" if r["template"] == "box" else "")
    print(
        f"aligned {r['aligned']} face(s) into {a.dst} ({r['template']} template, {geometry}; MTCNN on "
        f"{r['device']}) in {r['seconds']:.1f} s; {r['several_faces']} photo(s) had several faces (the large central "
        f"one kept); kept {r['already_there']} crop(s) already there; {no_face}; {r['unreadable']} unreadable or "
        f"non-image file(s) (listed in {Path(a.dst) / 'align_report.json'})"
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="facenet-pl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p, output=True, images=True):
        p.add_argument("ckpt", help="a facenet-pl checkpoint (.ckpt) or exported weights (.safetensors)")
        if images:
            p.add_argument(
                "--aligned",
                action="store_true",
                help="the images are face crops aligned as the model expects already (a model that names its "
                "alignment, e.g. one from import-weights, otherwise detects and aligns each photo itself)",
            )
        p.add_argument(
            "--flip",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="horizontal-flip averaging (default: the model's model.eval_flip)",
        )
        if output:
            p.add_argument("--force", action="store_true", help="replace an existing output")
        return p

    p = common(sub.add_parser("embed", help="embed images or folders"))
    p.add_argument("inputs", nargs="+")
    p.add_argument("--include", nargs="+", help="globs of files to embed, on paths relative to each folder")
    p.add_argument("--exclude", nargs="+", help="globs of files to leave out, e.g. '*Ambient*'")
    p.add_argument("-o", "--output", required=True, help="embeddings.npy (+ .files.txt) or .parquet")
    p.set_defaults(fn=cmd_embed)
    p = common(sub.add_parser("verify", help="same person or not"), output=False)
    p.add_argument("image1")
    p.add_argument("image2")
    p.add_argument("--threshold", type=float, help="squared-distance threshold (default: the checkpoint's)")
    p.set_defaults(fn=cmd_verify)
    p = common(sub.add_parser("calibrate", help="fit the verification threshold on a labelled folder"))
    p.add_argument("folder", help="root/<identity>/<images>, people the model was not trained on")
    p.add_argument("-o", "--output", required=True, help="new .ckpt or .safetensors file with the threshold")
    p.add_argument("--far-target", type=float, help="largest threshold with FAR <= this (default: best accuracy)")
    p.add_argument("--folds", type=int, default=10, help="folds of the accuracy estimate (fewer if too few people)")
    p.add_argument("--pairs-per-fold", type=int, default=100, help="matched (and as many mismatched) pairs per fold")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_calibrate)
    p = common(sub.add_parser("cluster", help="group a folder of images into identities"))
    p.add_argument("folder")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--threshold", type=float)
    p.add_argument("--n-clusters", type=int)
    p.set_defaults(fn=cmd_cluster)
    p = common(sub.add_parser("export", help="ONNX, TorchScript or safetensors (to share a model)"), images=False)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--format", choices=["onnx", "torchscript", "safetensors"], help="default: from the file extension")
    p.set_defaults(fn=cmd_export)
    p = common(sub.add_parser("plot", help="2-D t-SNE of embeddings coloured by identity folder"))
    p.add_argument("folder")
    p.add_argument("-o", "--output", required=True, help="PNG file")
    p.set_defaults(fn=cmd_plot)
    p = sub.add_parser("summary", help="tabulate a Hydra multirun directory")
    p.add_argument("folder")
    p.add_argument("--sort", default="best/val/acc")
    p.add_argument("--csv", help="also write the table as CSV")
    p.set_defaults(fn=cmd_summary)
    p = sub.add_parser("report", help="ablation table (Markdown, CSV) and plot from a finished multirun")
    p.add_argument("folder", help="a train.py -m or eval.py -m multirun directory")
    p.add_argument("--metric", help="plotted metric (default: test/acc for train.py jobs, accuracy for eval.py)")
    p.add_argument("--x", help="a metric for the x axis instead of the swept setting, e.g. model/macs_per_image")
    p.add_argument("--out", help="folder for report.md/.csv/.png (default: the multirun directory)")
    p.add_argument("--force", action="store_true", help="replace an existing report")
    p.add_argument(
        "--wandb",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log the table and plot to W&B (default: when the jobs used logger=wandb)",
    )
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("cache", help="list or prune decoded-image caches (data.cache_dir)")
    p.add_argument("action", choices=["list", "prune"])
    p.add_argument(
        "--cache-dir",
        default=os.environ.get("FACENET_PL_CACHE_DIR", ".cache/facenet_pl"),
        help="default: $FACENET_PL_CACHE_DIR, else .cache/facenet_pl (data.cache_dir's default)",
    )
    p.add_argument("--all", action="store_true", help="prune: every cache, not only superseded/incomplete ones")
    p.add_argument("--dry-run", action="store_true", help="prune: show what would be removed")
    p.add_argument("--yes", action="store_true", help="prune: do not ask")
    p.set_defaults(fn=cmd_cache)
    p = sub.add_parser("align", help="detect (MTCNN), align and crop the face of every photo in a folder")
    p.add_argument("src", help="photos: root/<identity>/<images> (any layout is mirrored)")
    p.add_argument("dst", help="output folder for the crops (same relative paths, .png)")
    p.add_argument(
        "--template",
        choices=("arcface", "dlib", "box"),
        default="arcface",
        help="arcface: five landmarks onto insightface's 112 px points (default); dlib: onto where they sit in "
        "dlib's 150 px face chips (for import-weights dlib); box: the detector's box + "
        "--margin, no rotation (davidsandberg/facenet)",
    )
    p.add_argument("--size", type=int, help="crop side in px (default 112 for arcface, 150 for dlib, 160 for box)")
    p.add_argument("--margin", type=int, default=32, help="box template: border in px of the photo (default 32)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes on a CPU (default: all cores)")
    p.add_argument("--batch-size", type=int, default=32, help="photos read and detected together (default 32)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: a GPU if there is one)")
    p.add_argument("--force", action="store_true", help="redo crops that already exist in dst")
    p.add_argument(
        "--no-face",
        choices=("skip", "center"),
        default="skip",
        help="a photo without a detectable face: skip it (default), or crop it at the median face placement of "
        "the run (keeps every file, e.g. the LFW images pairs.txt names)",
    )
    p.set_defaults(fn=cmd_align)
    p = sub.add_parser("import-weights", help="a published trained face model as a facenet-pl model file")
    from facenet_pl.models.published import PUBLISHED

    p.add_argument("name", choices=sorted(PUBLISHED), help="; ".join(f"{k}: {v.about}" for k, v in PUBLISHED.items()))
    p.add_argument("-o", "--output", required=True, help="the model file to write (.safetensors)")
    p.add_argument("--from", dest="source", help="the weights file itself (default: the one its package installed)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(fn=cmd_import_weights)
    p = sub.add_parser("pack-bin", help="write an insightface .bin verification set from a folder and a pairs file")
    p.add_argument("root", help="faces in LFW's layout, root/<Name>/<Name>_NNNN.<ext> (e.g. facenet-pl align's crops)")
    p.add_argument("pairs", help="an LFW pairs file (pairs.txt: 10 folds of matched then mismatched pairs)")
    p.add_argument("-o", "--output", required=True, help="the .bin to write, e.g. lfw.bin")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(fn=cmd_pack_bin)
    p = sub.add_parser("download", help="download a dataset (lfw), MD5-verified", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=None)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["download"]:
        from facenet_pl.data.download import main as download_main

        return download_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        args.fn(args)
    except (CLIError, FileNotFoundError, ValueError) as e:
        print(f"facenet-pl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only output folder, a full disk: one line, not a traceback
        from facenet_pl.utils.errors import not_writable_message

        print(f"facenet-pl {args.command}: error: {not_writable_message(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
