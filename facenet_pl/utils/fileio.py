"""Files written safely: temp file + fsync + rename, stale temp files of dead processes cleaned up.

Every file facenet-pl writes that a later run trusts (checkpoints, decode caches) goes through
:func:`atomic_write`: a kill or a full disk leaves the previous file intact and at most a temp file
named ``<name>.tmp-<pid>``, which :func:`remove_stale_temps` deletes on the next start once that
process is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from facenet_pl.utils.errors import ConfigError, UnsafeModelFileError, is_disk_full

log = logging.getLogger(__name__)

_TEMP = re.compile(r"\.tmp-(\d+)(\.[A-Za-z0-9]+)?$")  # name.tmp-PID, or .stem.tmp-PID.suffix (atomic_output)


def temp_name(path: Path) -> Path:
    """Where :func:`atomic_write` writes ``path`` first (same folder, so the rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temp file next to ``path``, fsync it and rename it over ``path``.

    On any failure (ENOSPC, an exception in ``write``, Ctrl-C) the temp file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path next to ``path`` with its suffix (``.model.tmp-<pid>.onnx``: writers that pick the format from
    the suffix still work) to write and check the output in; renamed over ``path`` (after an fsync) only when the
    block ends without error, removed otherwise. A kill leaves only the temp file, which
    :func:`remove_stale_temps` deletes once the process is gone: never a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if is_disk_full(e) and e.filename in (None, str(tmp)):  # a writer's write() names no file, or our temp:
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e  # name the output
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``Path(path).write_text(text)``, but whole or absent (:func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete ``*.tmp-<pid>`` files in ``directory`` whose process is gone (left by a kill or a crash)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for f in directory.iterdir():
        m = _TEMP.search(f.name)
        if m and f.is_file() and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            f.unlink(missing_ok=True)
            removed.append(f)
    if removed:
        log.info("removed %d temp file(s) left by an interrupted run in %s", len(removed), directory)
    return removed


def safe_torch_load(path: str | Path, name: str, hint: str, kind: str) -> Any:
    """``torch.load(weights_only=True)`` on the CPU: a file that would run code is an :class:`UnsafeModelFileError`,
    an unreadable one a :class:`ConfigError`; ``name`` starts each message (the path, or ``key=path``), ``hint`` says
    what to do, ``kind`` what the file should have been."""
    import pickle

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeModelFileError(
            f"{name} holds Python objects that would run code when opened (not only tensors and plain data): "
            f"refusing to load it ({str(e).splitlines()[0]}). {hint}"
        ) from None
    except Exception as e:  # truncated, not a torch file at all
        raise ConfigError(f"{name} is not a readable {kind} ({type(e).__name__}: {e})") from None
