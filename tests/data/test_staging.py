"""data.stage_dir: the first rank of a node copies the shards, verified against the
manifest; an intact copy is kept, a damaged one is copied again, a damaged source stops."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from distributed_helpers import run_distributed

from data_prep.manifest import ShardError, load_split
from pipeline.config import DataConfig, DistConfig
from pipeline.data.staging import copy_verified, stage_shards
from pipeline.dist.group import init_distributed

SHARDS = 9  # the sample: 7 train + 2 val


def _stage(rank: int, world: int, shards: str, stage_dir: str) -> tuple[str, int]:
    env = init_distributed(DistConfig(device="cpu"))
    staged = stage_shards(DataConfig(shards=shards, stage_dir=stage_dir), env)
    return staged.shards, env.local_rank


def test_every_rank_reads_one_verified_node_local_copy(sample_shards, tmp_path):
    results = run_distributed(_stage, world_size=2, args=(str(sample_shards),
                                                           str(tmp_path / "stage")))
    copy = tmp_path / "stage" / sample_shards.name
    assert results == [(str(copy), 0), (str(copy), 1)]
    for split in ("train", "val"):
        assert load_split(copy, split).num_samples == load_split(sample_shards, split).num_samples
        for tar in (sample_shards / split).glob("*.tar"):
            assert (copy / split / tar.name).read_bytes() == tar.read_bytes()


def test_an_intact_copy_is_kept_and_a_damaged_one_copied_again(sample_shards, tmp_path):
    copy = tmp_path / "stage" / "shards"
    first = copy_verified(sample_shards, copy)
    assert (first.copied, first.kept) == (SHARDS, 0)
    again = copy_verified(sample_shards, copy)
    assert (again.copied, again.kept, again.bytes) == (0, SHARDS, 0)

    tar = copy / "train" / "train-000003.tar"
    data = bytearray(tar.read_bytes())
    data[100] ^= 0xFF
    tar.write_bytes(bytes(data))
    os.utime(tar, ns=(tar.stat().st_atime_ns, tar.stat().st_mtime_ns + 1))  # a new write
    repaired = copy_verified(sample_shards, copy)
    assert (repaired.copied, repaired.kept) == (1, SHARDS - 1)
    assert tar.read_bytes() == (sample_shards / "train" / tar.name).read_bytes()


def test_a_damaged_source_shard_stops_the_staging_naming_it(sample_shards, tmp_path):
    source = Path(shutil.copytree(sample_shards, tmp_path / "shards"))
    tar = source / "val" / "val-000001.tar"
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tar.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=f"{tar} does not match the sha256 in its manifest"):
        copy_verified(source, tmp_path / "stage" / "shards")
    assert not list((tmp_path / "stage").rglob("*.partial-*"))  # nothing half-copied left
