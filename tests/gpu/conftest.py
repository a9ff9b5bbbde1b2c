"""The GPU check's tests (`pytest -m gpu`, run by bench/gpu_check.sh): on CUDA when there is
one; on the CPU with GPU_CHECK_DRY_RUN=1 (bench/gpu_check.sh --dry-run), so that all but
CUDA itself is proven on a machine without a GPU; skipped otherwise."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

DRY_RUN = "GPU_CHECK_DRY_RUN"
# The loader tests' shards of ramp images and their helpers serve here too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(scope="session")
def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    if os.environ.get(DRY_RUN):
        return torch.device("cpu")
    pytest.skip("no CUDA: the GPU check's tests run on a GPU, or on the CPU with "
                f"{DRY_RUN}=1 (bash bench/gpu_check.sh PHASE OUT --dry-run)")


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The loader tests' ramp shards: 50 train samples in 7 shards, 15 val samples."""
    from loader_helpers import ramp_shards
    return ramp_shards(tmp_path_factory.mktemp("ramps"))
