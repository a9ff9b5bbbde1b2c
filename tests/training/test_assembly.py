"""The assembly's start-up work: the shards' indexes hashed once per job (rank 0), an error
raised on every rank alike; deterministic runs set cuBLAS's workspace before CUDA starts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from distributed_helpers import run_distributed

from data_prep import manifest as shard_checks
from data_prep.manifest import ShardError
from pipeline.config import load_config
from pipeline.dist.group import init_distributed
from pipeline.training import session
from pipeline.training.assembly import assemble
from pipeline.training.precision import CUBLAS_WORKSPACE


def _assemble_counting_hashes(rank: int, world: int, shards: str) -> tuple[int, str | None]:
    """(index files this rank hashed, the ShardError it raised)."""
    hashed = []
    real = shard_checks.file_sha256
    shard_checks.file_sha256 = lambda path: hashed.append(path) or real(path)
    cfg = load_config(None, [f"data.shards={shards}", "dist.device=cpu", "data.image_size=32",
                             "data.batch_size=4", "data.num_workers=1", "model.sync_bn=none"])
    try:
        assemble(cfg, init_distributed(cfg.dist))
        error = None
    except ShardError as err:
        error = str(err)
    return len(hashed), error


def test_only_rank_0_hashes_the_indexes(sample_shards):
    (rank0, ok0), (rank1, ok1) = run_distributed(_assemble_counting_hashes, 2,
                                                 args=(str(sample_shards),))
    assert (rank0, rank1, ok0, ok1) == (9, 0, None, None)  # 7 train + 2 val indexes


def test_a_stale_index_stops_every_rank_with_rank_0s_message(sample_shards, tmp_path):
    damaged = Path(shutil.copytree(sample_shards, tmp_path / "shards"))
    index = damaged / "train" / "train-000002.idx"
    index.write_text(index.read_text().replace("jpg", "jpe", 1))
    (_, error0), (hashed1, error1) = run_distributed(_assemble_counting_hashes, 2,
                                                     args=(str(damaged),))
    assert error0 == error1 and f"index {index} of shard train-000002.tar is stale" in error0
    assert hashed1 == 0


def test_deterministic_runs_set_the_cublas_workspace_before_cuda_starts(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = []

    class StopHere(Exception):
        pass

    def first_cuda_call(cfg):  # init_distributed picks (and so starts) the device
        seen.append(os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
        raise StopHere

    monkeypatch.setattr(session, "init_distributed", first_cuda_call)
    for deterministic in ("false", "true"):
        with pytest.raises(StopHere):
            session.run_session(None, ["data.shards=/x",
                                       f"precision.deterministic={deterministic}"], None)
    assert seen == [None, CUBLAS_WORKSPACE]
