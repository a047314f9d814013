"""Run directories that are never shared: ``${unique_dir:...}`` in ``conf/hydra/default.yaml``.

Hydra names a run's directory after the current second, so two runs started in the same second (two
shells, a job array) would write into one directory: one run's config, metrics and checkpoints replacing
the other's. The ``unique_dir`` resolver creates the directory itself with an exclusive ``mkdir`` and
appends ``-1``, ``-2``, ... when the name is taken, so each run owns its directory by construction.
Registered with ``use_cache=True``: Hydra copies resolver caches from the master config into each
multirun job's config, so a sweep directory is chosen once, like ``${now:...}``.

Kept free of heavy imports: the entry points register it before Hydra composes.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

_MAX_SUFFIX = 10_000


def unique_dir(path: str) -> str:
    """Create ``path`` (or ``path-1``, ``path-2``, ... if taken) exclusively and return the one created."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(_MAX_SUFFIX):
        candidate = base if i == 0 else base.with_name(f"{base.name}-{i}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        return str(candidate)
    raise FileExistsError(f"{_MAX_SUFFIX} run directories named {base}[-N] exist already: set hydra.run.dir")


def unwritable_output(argv: list[str], default: str = "outputs") -> str | None:
    """Before Hydra starts (it would print a traceback from its own code): the one-line reason why the run
    directory that ``argv`` asks for (``hydra.run.dir=``/``hydra.sweep.dir=``, else ``default``) cannot be written,
    or None. Checked on the nearest folder that exists, with ``os.access`` (which also sees read-only mounts)."""
    keys = ("hydra.sweep.dir=",) if ("-m" in argv or "--multirun" in argv) else ("hydra.run.dir=",)
    wanted = next((a.split("=", 1)[1] for a in argv if a.startswith(keys)), default)
    if "${" in wanted:  # an interpolation: Hydra resolves it; nothing to check here
        return None
    path = Path(wanted).expanduser().absolute()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        return None
    why = "a file, not a folder" if not existing.is_dir() else "read-only (or not writable by you)"
    key = keys[0].rstrip("=")
    return f"cannot write the run directory {path}: {existing} is {why}. Choose another with {key}=<folder>"


def _explicit_run_dir(argv: list[str]) -> Path | None:
    if "-m" in argv or "--multirun" in argv:
        return None
    value = next((a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")), None)
    return None if value is None or "${" in value else Path(value).expanduser().absolute()


def _resuming(argv: list[str]) -> bool:
    value = next((a.split("=", 1)[1] for a in argv if a.startswith("ckpt_path=")), None)
    return value not in (None, "", "null", "None")


#: A resume's record while it is not yet accepted: (its folder, the ``.hydra/resume-N`` it becomes, the run's
#: ``train.log`` and that log's size before this process wrote to it, -1 when there was none).
_PENDING_RESUME: tuple[Path, Path, Path, int] | None = None


def resume_record_argv(argv: list[str]) -> list[str]:
    """Resuming into an existing run directory: Hydra writes its record of the resume (config, overrides) beside
    the run's original ``.hydra/`` files, first in a pending folder that becomes ``.hydra/resume-N/`` once the
    resume is accepted (:func:`accept_resume_record`); a refused resume leaves no record and no log line
    (:func:`discard_resume_record`), so the run still shows exactly how it was made."""
    global _PENDING_RESUME
    run_dir = _explicit_run_dir(argv)
    if run_dir is None or not _resuming(argv) or any(a.startswith("hydra.output_subdir=") for a in argv):
        return argv
    if os.environ.get("LOCAL_RANK", "0") != "0" or not (run_dir / ".hydra" / "config.yaml").is_file():
        return argv  # DDP's other ranks record nothing (and so never cut rank 0's train.log back)
    n = 1
    while (run_dir / ".hydra" / f"resume-{n}").exists():
        n += 1
    pending = f".hydra/.resume-{n}.pending-{os.getpid()}"
    log = run_dir / "train.log"
    _PENDING_RESUME = (
        run_dir / pending,
        run_dir / ".hydra" / f"resume-{n}",
        log,
        log.stat().st_size if log.is_file() else -1,
    )
    return [*argv, f"hydra.output_subdir={pending}"]


def accept_resume_record() -> Path | None:
    """The resume passed its checks: its record becomes ``.hydra/resume-N``; returns that folder (None when this
    process has no pending resume record)."""
    global _PENDING_RESUME
    if _PENDING_RESUME is None:
        return None
    pending, final, _, _ = _PENDING_RESUME
    _PENDING_RESUME = None
    if not pending.is_dir():
        return None
    pending.rename(final)
    return final


def discard_resume_record() -> None:
    """At exit: a resume never accepted (refused, or failed before its checks passed) leaves nothing in the run:
    its pending record is removed and the run's ``train.log`` cut back to what it held before."""
    global _PENDING_RESUME
    if _PENDING_RESUME is None:
        return
    pending, _, log, size = _PENDING_RESUME
    _PENDING_RESUME = None
    import logging
    import shutil

    for handler in logging.getLogger().handlers:  # Hydra's file handler: flushed before the cut
        handler.flush()
    shutil.rmtree(pending, ignore_errors=True)
    try:
        if size < 0:
            log.unlink(missing_ok=True)
        elif log.is_file():
            os.truncate(log, size)
    except OSError:
        pass


#: The lock of the run this process trains (held open for the process's life).
_RUN_LOCK: int | None = None


def lock_run_dir(argv: list[str]) -> str | None:
    """One ``train.py`` per run directory: an exclusive lock on ``<hydra.run.dir>/.lock``, taken before Hydra writes
    anything and held until the process ends. Returns the one-line reason when another process holds it. A
    directory Hydra names itself (``${unique_dir:...}``) is unique already; DDP's worker processes (``LOCAL_RANK``
    > 0) run inside the lock of rank 0."""
    global _RUN_LOCK
    import fcntl

    run_dir = _explicit_run_dir(argv)
    if run_dir is None or os.environ.get("LOCAL_RANK", "0") != "0":
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
        os.close(fd)
        return (
            f"another train.py (pid {holder}) is running in {run_dir}: one run per directory. Wait for it, or "
            "choose another hydra.run.dir"
        )
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _RUN_LOCK = fd
    return None


def release_run_lock() -> None:
    """Release the run directory's lock (at the end of the process, or of an in-process run)."""
    global _RUN_LOCK
    if _RUN_LOCK is not None:
        os.close(_RUN_LOCK)
        _RUN_LOCK = None


def register_hydra() -> None:
    """What the configs need before Hydra composes them (idempotent): the ``${unique_dir:...}`` resolver (run
    directories never shared, conf/hydra/default.yaml), ``${missing:}`` (a value the user must give) and the
    schemas conf/ extends (``model/settings``)."""
    from facenet_pl.utils.settings import store_schemas

    if not OmegaConf.has_resolver("unique_dir"):
        OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True)
    if not OmegaConf.has_resolver("missing"):
        OmegaConf.register_new_resolver("missing", _missing_value)
    store_schemas()


def _missing_value() -> None:
    """``${missing:}``: a value the user must give, where an experiment cannot write ``???`` (merging ``???`` onto
    a value keeps the value, so ``experiment=finetune``'s ``model.init_from: ???`` once left it null and trained
    from scratch). check_config_early names the key; resolving it anywhere else fails the same way."""
    from omegaconf.errors import InterpolationToMissingValueError

    raise InterpolationToMissingValueError("a value the user must give (${missing:})")


#: Keys of a data config that name what is read from disk.
DATA_PATH_KEYS = ("root", "train_root", "pairs_file", "people_file", "bins_dir", "val_bins")


def recorded_run_data(checkpoint: str | Path) -> dict | None:
    """The data config that the run folder holding ``checkpoint`` (``<run>/checkpoints/<file>``, or a ``cv=N`` fold's
    ``<run>/fold_<i>/checkpoints/<file>``) recorded in its own ``.hydra/config.yaml``, resolved as train.py resolved
    it (``${hydra:runtime.*}`` from that run's ``.hydra/hydra.yaml``); None when there is no such record or it does
    not resolve.

    A checkpoint is a file a user may be handed: the data paths stored inside it say what eval.py would list and
    read, so they are used only where the run's own record beside it names the same paths.
    """
    run = Path(checkpoint).expanduser().absolute().parent.parent
    hydra_dir = next((d / ".hydra" for d in (run, run.parent) if (d / ".hydra" / "config.yaml").is_file()), None)
    if hydra_dir is None:
        return None
    try:
        text = (hydra_dir / "config.yaml").read_text()
        runtime = OmegaConf.load(hydra_dir / "hydra.yaml").hydra.runtime
        # ${hydra:runtime.cwd} is Hydra's resolver of the *current* run: point it at the recorded run's values
        cfg = OmegaConf.create(text.replace("${hydra:", "${_recorded_hydra."))
        cfg._recorded_hydra = {"runtime": {k: runtime[k] for k in ("cwd", "output_dir")}}
        data = OmegaConf.to_container(cfg.data, resolve=True)
    except Exception:  # absent, unreadable, not YAML, an unknown resolver: no record to vouch for anything
        return None
    return data if isinstance(data, dict) else None


def unvouched_data_paths(checkpoint: str | Path, data: dict) -> dict:
    """The path entries of ``data`` (a checkpoint's stored data config) that the run folder's own record does not
    name with the same value (see :func:`recorded_run_data`): ``{key: stored value}``, empty when all are vouched."""
    stored = {k: data[k] for k in DATA_PATH_KEYS if data.get(k) not in (None, "", [])}
    if not stored:
        return {}
    recorded = recorded_run_data(checkpoint) or {}
    return {k: v for k, v in stored.items() if recorded.get(k) != v}
