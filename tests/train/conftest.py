"""Learnable sample shards for the training runs, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep import sample, shard


@pytest.fixture(scope="session")
def sample_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 classes: 400 train images in 7 shards, 100 val images in 2."""
    root = tmp_path_factory.mktemp("sample")
    sample.generate(root / "source", classes=10, train_per_class=40, val_per_class=10)
    assert shard.main(["--source", str(root / "source"), "--out", str(root / "shards"),
                       "--shard-size", "64", "--workers", "1"]) == 0
    return root / "shards"
