"""``facenet-pl align``, ``pack-bin``, ``cache``: preparing face data."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from facenet_pl.cli.common import (
    CLIError,
    atomic_output,
    no_overwrite,
)

log = logging.getLogger("facenet_pl.cli")


def cmd_pack_bin(a) -> None:
    """Pairs of an LFW pairs file, their image files' bytes as they are (JPEG, PNG), in insightface's layout."""
    from facenet_pl.data.binsets import write_bin
    from facenet_pl.data.lfw import find_image_ext, find_image_root, image_path, read_pairs

    out = Path(a.output)
    no_overwrite(out, a.force)
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
