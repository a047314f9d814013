"""insightface's ``.bin`` verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ``calfw.bin``, ...).

A ``.bin`` is ``pickle.dump((bins, issame_list))``, mostly written under Python 2: ``bins`` holds 2N encoded images
(pair i is ``bins[2i]``, ``bins[2i+1]``): raw JPEG bytes (lfw) or numpy uint8 arrays of ``cv2.imencode`` output
(the others); ``issame_list`` N bools. **A pickle can run code**, so it is read by an unpickler that builds only
what these files hold (lists, tuples, bytes, bools, and numpy's array reconstruction and dtypes) and refuses
anything else in one line, before anything is decoded.

Scored as insightface and davidsandberg/facenet score them: 10 folds of consecutive pairs (not shuffled), the
threshold chosen on 9 folds, the accuracy measured on the tenth (:func:`bin_folds`, the layout of scikit-learn's
``KFold(10, shuffle=False)``).
"""

from __future__ import annotations

import codecs
import io
import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facenet_pl.utils.errors import ConfigError

log = logging.getLogger(__name__)

BIN_FOLDS = 10


class BinFormatError(ConfigError):
    """A ``.bin`` that is not a verification set, or holds something other than images and labels."""


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3's pickler uses it for bytes at protocol < 3 (``encode(str, 'latin1')``),
    and nothing else."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not bytes")
    return codecs.encode(text, "latin1")


def _numpy_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    allowed = {}
    for core in ("numpy.core", "numpy._core"):  # numpy 1.x (and Python 2) / numpy 2 names
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5 arrays
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = _latin1_encode
    allowed[("__builtin__", "bytearray")] = bytearray  # Python 2 name
    allowed[("builtins", "bytearray")] = bytearray
    return allowed


class _SafeUnpickler(pickle.Unpickler):
    """Builds only lists, tuples, bytes, bools, numbers and numpy arrays / dtypes / scalars; every other global (a
    function a pickle would call: ``os.system``, ``eval``, ``subprocess``...) is refused."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it asks to call {module}.{name}, which a verification set never holds (a pickle that runs code?)"
            ) from None


def read_bin(path: str | Path) -> tuple[list[bytes], np.ndarray]:
    """``(2N encoded images, N issame bools)`` of a ``.bin``, read safely; one-line :class:`BinFormatError` else."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BinFormatError(f"cannot read {path}: {e.strerror}") from None
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any failure to unpickle is the file's, said in one line
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BinFormatError(f"{path}: not an insightface .bin verification set, refused: {reason}") from None
    if not (isinstance(obj, tuple | list) and len(obj) == 2):
        raise BinFormatError(f"{path}: expected a pickled (images, issame) pair, found {type(obj).__name__}")
    bins, issame = obj
    try:
        same = np.asarray([bool(v) for v in issame], bool)
    except (TypeError, ValueError):
        raise BinFormatError(f"{path}: its issame list is not a list of bools") from None
    if not isinstance(bins, list | tuple) or len(bins) != 2 * len(same) or not len(same):
        raise BinFormatError(
            f"{path}: {len(bins) if isinstance(bins, list | tuple) else 'no list of'} images for {len(same)} pairs "
            "(a .bin holds two images per pair)"
        )
    images = []
    for i, b in enumerate(bins):
        if isinstance(b, np.ndarray) and b.dtype == np.uint8 and b.ndim == 1:
            images.append(b.tobytes())
        elif isinstance(b, bytes | bytearray):
            images.append(bytes(b))
        else:
            raise BinFormatError(
                f"{path}: image {i} is a {type(b).__name__}, not encoded image bytes (raw bytes or a uint8 array)"
            )
    return images, same


def write_bin(path: str | Path, images: Sequence[bytes], issame: Sequence[bool]) -> None:
    """A ``.bin`` as insightface writes it (``pickle.dump((bins, issame_list), protocol=HIGHEST)``): raw encoded
    bytes, written whole or not at all."""
    from facenet_pl.utils.fileio import atomic_write

    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images for {len(issame)} pairs: two per pair")
    payload = ([bytes(b) for b in images], [bool(s) for s in issame])
    atomic_write(Path(path), lambda f: pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL))


def bin_folds(n_pairs: int, n_folds: int = BIN_FOLDS) -> np.ndarray:
    """Fold id of each pair: ``n_folds`` runs of consecutive pairs, the first ``n_pairs % n_folds`` one longer
    (scikit-learn's ``KFold(n_folds, shuffle=False)``, which insightface's ``verification.py`` uses)."""
    return np.repeat(np.arange(n_folds), [len(c) for c in np.array_split(np.arange(n_pairs), n_folds)])


def bin_verification_set(path: str | Path, image_size: int, workers: int = 0, grayscale: bool = False):
    """A :class:`~facenet_pl.data.pairs.VerificationSet` of a ``.bin``: its images decoded (resized to
    ``image_size``) in memory, pair i = images (2i, 2i+1), consecutive folds. The set has no identity labels:
    every image counts as its own (k-NN and clustering do not apply)."""
    from facenet_pl.data.datasets import InMemoryFaceDataset
    from facenet_pl.data.images import EncodedImage, decode_images
    from facenet_pl.data.pairs import VerificationSet

    path = Path(path).expanduser()
    encoded, issame = read_bin(path)
    images, ok = decode_images(
        [EncodedImage(b, f"{path}[{i}]") for i, b in enumerate(encoded)],
        image_size,
        num_workers=workers,
        grayscale=grayscale,
    )
    if not ok.all():
        bad = np.flatnonzero(~ok)
        raise BinFormatError(
            f"{path}: {len(bad)} of its {len(ok)} images cannot be decoded (e.g. image {int(bad[0])}, pair "
            f"{int(bad[0]) // 2}): the file is damaged"
        )
    n = len(issame)
    labels = np.arange(2 * n)
    return VerificationSet(
        InMemoryFaceDataset(images, labels),
        np.arange(2 * n).reshape(n, 2),
        issame,
        bin_folds(n),
        name=f"{path.stem} ({path.name})",
    )
