"""Generated ILSVRC-shaped trees, and the sample tree sharded once for the read-only tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from shard_helpers import TREE, run_shard

from data_prep import sample


@pytest.fixture(scope="session")
def tree(tmp_path_factory) -> tuple[Path, dict]:
    """Folder layout, with every defect of --bad; returns (root, {split: {relpath: wnid}})."""
    root = tmp_path_factory.mktemp("imagenet")
    return root, sample.generate(root, **TREE, bad=True)


@pytest.fixture(scope="session")
def sharded(tree, tmp_path_factory) -> Path:
    """The tree sharded once with two workers (read-only for tests)."""
    out = tmp_path_factory.mktemp("shards")
    result = run_shard("--source", tree[0], "--out", out, "--shard-size", "10",
                       "--workers", "2", "--max-rejects", "3")
    assert result.returncode == 0, result.stderr
    return out
