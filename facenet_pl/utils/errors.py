"""Errors that are the user's to fix: entry points print their message alone, without a traceback.

Kept free of heavy imports (torch, Lightning): the entry points import it before Hydra composes.
"""

import errno
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ConfigError(ValueError):
    """A config value or input that cannot work; the message names the key or file and what to do."""


#: errno values of a write refused by permissions or a read-only filesystem (EACCES, EPERM, EROFS).
_NOT_WRITABLE = (13, 1, 30)


def free_space(directory: str | os.PathLike) -> str:
    """Free space of the file system holding ``directory``, for messages ("1.2 GB free")."""
    d = Path(directory)
    while not d.exists() and d != d.parent:
        d = d.parent
    try:
        free = shutil.disk_usage(d).free
    except OSError:
        return "free space unknown"
    return f"{free / 1e9:.1f} GB free" if free >= 1e8 else f"{free / 1e6:.0f} MB free"


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC or EDQUOT: no room to write."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def not_writable_message(e: OSError) -> str:
    """One line for a write the filesystem refused, naming the file."""
    where = e.filename or "a file"
    return (
        f"cannot write {where}: {e.strerror or e}. Choose a writable folder (hydra.run.dir=..., "
        "paths.cache_dir=..., or the command's output path)"
    )


def user_error_message(e: BaseException) -> str | None:
    """One line for an error that is the user's to fix, else None (a bug: let the traceback show)."""
    from omegaconf.errors import InterpolationKeyError, MissingMandatoryValue

    if isinstance(e, MissingMandatoryValue):
        key = getattr(e, "full_key", None) or "a config key"
        return f"{key} has no value (??? in the config): set it on the command line, e.g. {key}=<value>"
    if isinstance(e, InterpolationKeyError):
        key = getattr(e, "full_key", None) or "a config key"
        return f"{key}: {str(e).splitlines()[0]}"
    if isinstance(e, ConfigError | FileNotFoundError):
        return str(e)
    if isinstance(e, OSError) and e.errno in _NOT_WRITABLE:
        return not_writable_message(e)
    if is_disk_full(e):
        where = e.filename or "a file"
        folder = os.path.dirname(os.path.abspath(where)) if e.filename else "."
        return f"disk full writing {where} ({free_space(folder)} in {folder}): free space, then rerun or resume"
    cause = e.__cause__ or e.__context__  # Hydra's instantiate wraps the error of the class it builds
    if type(e).__name__ == "InstantiationException" and cause is not None:
        return user_error_message(cause) or _unknown_setting_message(e, cause)
    return None


def _unknown_setting_message(e: BaseException, cause: BaseException) -> str | None:
    """A config group given a key its class does not take (``experiment=losses data=lfw``: the experiment sets
    ``data.train_identities`` for the built-in data, which ``data=lfw`` does not have): one line naming the key, the
    class and where the key came from."""
    import re

    found = re.search(r"unexpected keyword argument '(\w+)'", str(cause)) if isinstance(cause, TypeError) else None
    if found is None:
        return None
    group = (re.search(r"full_key: (\S+)", str(e)) or [None, ""])[1]
    target = (re.search(r"target '([\w.]+)'", str(e)) or [None, "its class"])[1].rsplit(".", 1)[-1]
    key = f"{group}.{found[1]}" if group else found[1]
    choices = _hydra_choices()
    source = f" ({group}={choices[group]})" if group in choices else ""
    experiment = f"experiment={choices['experiment']} " if choices.get("experiment") else ""
    return (
        f"{key} is not a setting of {target}{source}: {experiment or 'an override '}sets it, written for another "
        f"{group or 'config'} choice. Drop one of them, or remove the key with ~{key}"
    )


def _hydra_choices() -> dict:
    """The running Hydra app's group choices (``{'data': 'lfw', 'experiment': 'losses', ...}``), {} outside one."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return {k: v for k, v in HydraConfig.get().runtime.choices.items() if v is not None}
    except Exception:  # noqa: BLE001 - no Hydra app running
        return {}


def _to_log_files(logger_name: str, message: str) -> None:
    """Record the error in the run's log file without printing it a second time on the console."""
    record = logging.getLogger(logger_name).makeRecord(logger_name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@contextmanager
def exit_on_user_error(logger_name: str = "facenet_pl") -> Iterator[None]:
    """For entry points: an error that is the user's to fix is printed once, as one line, and exits 1."""
    try:
        yield
    except Exception as e:
        message = user_error_message(e)
        if message is None:
            raise
        _to_log_files(logger_name, message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


class UnsafeModelFileError(ConfigError):
    """A model file that would run code, or name code to run, when opened."""
