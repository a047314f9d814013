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


def register_resolvers() -> None:
    """Make ``${unique_dir:...}`` available to the configs (idempotent)."""
    if not OmegaConf.has_resolver("unique_dir"):
        OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True)
