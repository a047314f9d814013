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
import logging
import os
import sys

from facenet_pl.cli.common import CLIError
from facenet_pl.cli.data import cmd_align, cmd_cache, cmd_pack_bin
from facenet_pl.cli.faces import cmd_calibrate, cmd_cluster, cmd_embed, cmd_plot, cmd_verify
from facenet_pl.cli.models import cmd_export, cmd_import_weights
from facenet_pl.cli.runs import cmd_report, cmd_summary


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
