"""Shared fixtures. Tests never touch ../shared data or the network."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# decode caches that tests leave at data.cache_dir's default go to a folder of this process's, not the clone's
# .cache/facenet_pl (workers run side by side; nothing lands in the repository)
if "FACENET_PL_CACHE_DIR" not in os.environ:
    os.environ["FACENET_PL_CACHE_DIR"] = tempfile.mkdtemp(prefix="facenet_pl_test_cache_")
    atexit.register(shutil.rmtree, os.environ["FACENET_PL_CACHE_DIR"], ignore_errors=True)


def _threads_for_this_worker() -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto``), each worker gets its share of the cores, for torch's
    intra-op pool and for the processes its tests start (``OMP_NUM_THREADS`` is read by a new process's torch):
    two workers each with a pool of every core oversubscribe them, which made ``-n 2`` slower than one process
    (7:53 against 6:17 on 2 cores); one thread a worker took the suite from 6:36 to 3:37 (README, Development).
    Set before torch is imported here; a variable the user set is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1 or "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, cores // workers))


_threads_for_this_worker()

from facenet_pl.run.dirs import register_hydra  # noqa: E402  (train.py/eval.py register it the same way)

register_hydra()


def pytest_configure(config) -> None:
    """Under ``make test`` (which sets FACENET_PL_TESTS_DIE_WITH_PARENT), the suite ends when make does: a
    ``timeout`` or a CI runner that kills make alone would otherwise leave pytest running on, orphaned. Linux's
    parent-death signal; elsewhere nothing changes."""
    if os.environ.get("FACENET_PL_TESTS_DIE_WITH_PARENT") != "1" or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the signal was set
        os._exit(1)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
