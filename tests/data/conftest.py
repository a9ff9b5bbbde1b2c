"""Shards of ramp images, written once per session (read-only), and a copy to damage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from loader_helpers import ramp_shards


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 train samples in 7 shards of 8 (the last holds 2), 15 val samples in 2 shards."""
    return ramp_shards(tmp_path_factory.mktemp("ramps"))


@pytest.fixture
def damaged(shards: Path, tmp_path: Path) -> Path:
    """A private copy of the shards for a test to break."""
    return Path(shutil.copytree(shards, tmp_path / "shards"))
