"""What the ``facenet-pl`` commands share: one-line errors, the image files a command is given, embedding
them with a model file, never overwriting an output."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def atomic_output(path):
    """:func:`facenet_pl.utils.fileio.atomic_output` (imported on use: the CLI starts without heavy imports)."""
    from facenet_pl.utils.fileio import atomic_output as _atomic_output

    return _atomic_output(path)


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def walk_files(folder: Path) -> tuple[list[Path], list[str]]:
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


def collect_images(inputs: list[str], include: list[str] | None = None, exclude: list[str] | None = None) -> list[Path]:
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
            found, links = walk_files(p)
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


def warn_if_synthetic(model) -> None:
    """A model that has only seen the built-in synthetic faces measures little on photos: say so (one line)."""
    from facenet_pl.inference.model_files import synthetic_only_warning

    warning = synthetic_only_warning(model)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def embed_files(ckpt: str, files: list[Path], flip: bool | None, batch_size: int = 256, aligned: bool = True):
    """Embed image files with the model at ``ckpt``. A model that names the alignment it was trained with (an
    imported published model) gets photos detected and cropped that way first, unless ``aligned`` says the files
    are such crops already."""
    import torch

    from facenet_pl.data.images import decode_images
    from facenet_pl.inference.embed import embed_images, load_model

    model = load_model(ckpt)
    warn_if_synthetic(model)
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


def no_overwrite(path: Path, force: bool) -> None:
    """Refuse, before any work, an output that exists (without ``--force``) or cannot be written."""
    if path.exists() and not force:
        raise CLIError(f"{path} exists: not overwriting it (pass --force to replace it)")
    path = path.expanduser().absolute()
    existing = next(p for p in path.parents if p.exists())  # the folder the output will be created in
    if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        raise CLIError(f"cannot write {path}: {existing} is read-only (or not a writable folder); choose another")
