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

from facenet_pl.run_dirs import register_resolvers  # noqa: E402  (train.py/eval.py register it the same way)

register_resolvers()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
