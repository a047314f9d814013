"""Shared fixtures. Tests never touch ../shared data or the network."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from facenet_pl.run.dirs import register_resolvers  # noqa: E402  (train.py/eval.py register it the same way)

register_resolvers()


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
