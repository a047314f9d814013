"""Labeled Faces in the Wild: the official ``pairs.txt`` / ``people.txt`` formats and image paths.

``pairs.txt`` (View 2): a header ``<folds>\\t<n>``, then per fold ``n`` matched lines
``name<TAB>i<TAB>j`` followed by ``n`` mismatched lines ``name1<TAB>i<TAB>name2<TAB>j``.
``pairsDevTrain.txt``/``pairsDevTest.txt`` (View 1) have a single number ``n`` as header (one fold).
``people.txt``: the number of folds, then per fold a count line and ``name<TAB>images`` lines;
``peopleDevTrain.txt``/``peopleDevTest.txt`` have one count line and the names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet_pl.utils.errors import ConfigError


class LFWFormatError(ConfigError):
    """A malformed LFW protocol file; the message names the file and line."""


@dataclass(frozen=True)
class LFWPairs:
    """Pairs in file order: names and 1-based image numbers, ``issame`` and a fold id per pair."""

    name1: list[str]
    num1: np.ndarray
    name2: list[str]
    num2: np.ndarray
    issame: np.ndarray
    fold: np.ndarray

    def __len__(self) -> int:
        return len(self.name1)

    @property
    def n_folds(self) -> int:
        return int(self.fold.max()) + 1 if len(self) else 0


def _lines(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LFW protocol file not found: {path}")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def read_pairs(path: str | Path) -> LFWPairs:
    """Parse an official LFW pairs file (View 2 ``pairs.txt`` or View 1 ``pairsDev*.txt``)."""
    lines = _lines(Path(path))
    if not lines:
        raise LFWFormatError(f"{path}: empty file")
    head = lines[0].split()
    try:
        folds, per = (int(head[0]), int(head[1])) if len(head) == 2 else (1, int(head[0]))
    except (ValueError, IndexError):
        raise LFWFormatError(
            f"{path}:1: header must be '<folds>\\t<pairs per fold>' or '<pairs>', got {lines[0]!r}"
        ) from None
    body = lines[1:]
    if len(body) != folds * 2 * per:
        raise LFWFormatError(
            f"{path}: header promises {folds} folds x 2 x {per} = {folds * 2 * per} pairs, "
            f"the file has {len(body)} pair lines"
        )
    n1, i1, n2, i2, same = [], [], [], [], []
    for ln_no, ln in enumerate(body, start=2):
        f = ln.split("\t") if "\t" in ln else ln.split()
        try:
            if len(f) == 3:
                n1.append(f[0]), i1.append(int(f[1])), n2.append(f[0]), i2.append(int(f[2])), same.append(True)
            elif len(f) == 4:
                n1.append(f[0]), i1.append(int(f[1])), n2.append(f[2]), i2.append(int(f[3])), same.append(False)
            else:
                raise ValueError
        except ValueError:
            raise LFWFormatError(f"{path}:{ln_no}: expected 'name i j' or 'name1 i name2 j', got {ln!r}") from None
    issame = np.array(same, bool)
    expect = np.tile(np.r_[np.ones(per, bool), np.zeros(per, bool)], folds)
    if not np.array_equal(issame, expect):
        bad = int(np.argmax(issame != expect)) + 2
        raise LFWFormatError(f"{path}:{bad}: each fold must list {per} matched then {per} mismatched pairs")
    return LFWPairs(n1, np.array(i1), n2, np.array(i2), issame, np.repeat(np.arange(folds), 2 * per))


def read_people(path: str | Path) -> list[list[tuple[str, int]]]:
    """Parse ``people.txt`` (10 folds) or ``peopleDev*.txt`` (one set): a list of folds of (name, count)."""
    lines = _lines(Path(path))
    try:
        first = int(lines[0])
    except (ValueError, IndexError):
        raise LFWFormatError(f"{path}:1: expected a number, got {lines[0] if lines else ''!r}") from None
    nested = len(lines) > 1 and lines[1].split()[0].isdigit() and len(lines[1].split()) == 1
    folds, pos = [], 1
    for _ in range(first if nested else 1):
        if nested:
            count, pos = int(lines[pos]), pos + 1
        else:
            count = first
        fold = []
        for ln_no in range(pos, pos + count):
            if ln_no >= len(lines):
                raise LFWFormatError(f"{path}: ended early, a fold promises {count} people")
            f = lines[ln_no].split()
            if len(f) != 2 or not f[1].isdigit():
                raise LFWFormatError(f"{path}:{ln_no + 1}: expected 'name<TAB>count', got {lines[ln_no]!r}")
            fold.append((f[0], int(f[1])))
        folds.append(fold)
        pos += count
    if pos != len(lines):
        raise LFWFormatError(f"{path}:{pos + 1}: unexpected extra lines")
    return folds


def image_path(root: str | Path, name: str, number: int, ext: str = ".jpg") -> Path:
    """``<root>/<Name>/<Name>_NNNN.jpg``: the LFW layout."""
    return Path(root) / name / f"{name}_{number:04d}{ext}"


#: LFW's own ``.jpg``, or the ``.png`` crops ``facenet-pl align`` writes from it.
IMAGE_EXTS = (".jpg", ".png")


def find_image_ext(root: str | Path, name: str, number: int) -> str:
    """The file type of the LFW tree under ``root``, from one image it must hold: ``.jpg`` for LFW itself,
    ``.png`` for crops written by ``facenet-pl align``; ``.jpg`` if none is there (the caller reports it)."""
    for ext in IMAGE_EXTS:
        if image_path(root, name, number, ext).is_file():
            return ext
    return ".jpg"


def find_image_root(root: str | Path) -> Path:
    """The folder holding the per-person folders: ``root`` itself or a known LFW sub-folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"LFW root {root} does not exist: set data.root, or fetch LFW with "
            "`python -m facenet_pl.data.download lfw --root <dir>`"
        )
    for sub in ("lfw-deepfunneled", "lfw_funneled", "lfw-funneled", "lfw"):
        if (root / sub).is_dir():
            return root / sub
    return root
