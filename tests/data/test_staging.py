"""data.stage_dir: the first rank of a node copies the shards, verified against the
manifest; an intact copy is kept, a damaged one is copied again, a damaged source stops;
a copy belongs to one data set, and one that a job holds is never removed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from distributed_helpers import run_distributed

from data_prep import shard
from data_prep.manifest import ShardError, load_split, shards_identity
from pipeline.config import DataConfig, DistConfig
from pipeline.data import staging
from pipeline.data.staging import copy_verified, hold_copy, stage_shards
from pipeline.dist.group import init_distributed

SHARDS = 9  # the sample: 7 train + 2 val


def _stage(rank: int, world: int, shards: str, stage_dir: str) -> tuple[str, int]:
    env = init_distributed(DistConfig(device="cpu"))
    staged = stage_shards(DataConfig(shards=shards, stage_dir=stage_dir), env)
    return staged.shards, env.local_rank


def test_every_rank_reads_one_verified_node_local_copy(sample_shards, tmp_path):
    results = run_distributed(_stage, world_size=2, args=(str(sample_shards),
                                                           str(tmp_path / "stage")))
    copy = tmp_path / "stage" / f"{sample_shards.name}-{shards_identity(sample_shards)}"
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


@pytest.fixture(scope="module")
def twin(sample_shards, tmp_path_factory) -> Path:
    """Another data set in a folder of the same name: the sample's images in another
    order (--seed 1), so other shards and checksums."""
    out = tmp_path_factory.mktemp("twin") / sample_shards.name
    assert shard.main(["--source", str(sample_shards.parent / "source"), "--out", str(out),
                       "--shard-size", "64", "--workers", "1", "--seed", "1"]) == 0
    return out


def test_two_data_sets_in_folders_of_one_name_get_their_own_copies(sample_shards, twin,
                                                                   tmp_path):
    """Keyed by the folder's name, the second job's staging replaced the tars the first job
    was reading: it trained on the other data set from its next epoch on."""
    stage = str(tmp_path / "stage")
    (first, _), = run_distributed(_stage, world_size=1, args=(str(sample_shards), stage))
    (second, _), = run_distributed(_stage, world_size=1, args=(str(twin), stage))
    assert first != second
    for source, copy in ((sample_shards, Path(first)), (twin, Path(second))):
        tars = sorted((source / "train").glob("*.tar"))
        assert [t.read_bytes() for t in tars] == \
            [(copy / "train" / t.name).read_bytes() for t in tars]


def test_room_is_made_from_copies_no_job_holds_never_from_one_in_use(sample_shards, twin,
                                                                     tmp_path, monkeypatch):
    stage = tmp_path / "stage"
    third = Path(shutil.copytree(twin, tmp_path / "third" / "shards"))
    (third / "classes.json").write_text((third / "classes.json").read_text() + "\n")
    copies = [stage / f"shards-{shards_identity(s)}" for s in (sample_shards, twin, third)]
    assert len(set(copies)) == 3
    copy_verified(sample_shards, copies[0])
    copy_verified(twin, copies[1])
    size = sum(f.stat().st_size for f in copies[0].rglob("*.tar"))
    used = lambda: sum(f.stat().st_size for f in stage.rglob("*.tar"))  # noqa: E731
    monkeypatch.setattr(staging, "free_bytes", lambda _: int(2.5 * size) - used())

    with hold_copy(copies[0]):  # a live job reads the sample's copy
        hold_copy(copies[0]).close()  # a second holder does not block it either
        staged = copy_verified(third, copies[2])
        assert staged.copied == SHARDS
        assert copies[0].is_dir() and not copies[1].exists()  # the unused twin made room
        with hold_copy(copies[2]), pytest.raises(ShardError, match="GB needed to stage"):
            copy_verified(twin, copies[1])  # both others are in use: no room, a clear stop
        assert copies[0].is_dir() and copies[2].is_dir()
    for source, copy in ((sample_shards, copies[0]), (third, copies[2])):
        assert load_split(copy, "train").num_samples == load_split(source, "train").num_samples
