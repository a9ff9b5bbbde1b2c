"""Bad input stops the loader with an error naming the shard (and the sample)."""

from __future__ import annotations

import re
import shutil

import pytest
import torch
from loader_helpers import config, epoch, rewrite_shard

from pipeline.data import ShardError, build_train_loader, build_val_loader

CPU = torch.device("cpu")
BACKENDS = ["dali", "webdataset"]
SHARD = "train-000002.tar"


def build(shards, backend: str = "dali"):
    return build_train_loader(config(shards, backend=backend), 0, 1, CPU)


def test_a_missing_index_is_named(damaged):
    (damaged / "train" / "train-000002.idx").unlink()
    with pytest.raises(ShardError, match=r"train-000002\.idx.* is missing"):
        build(damaged)


def test_a_stale_index_is_named(damaged):
    index = damaged / "train" / "train-000002.idx"
    index.write_text(index.read_text().replace(" 1 ", " 2 ", 1))
    with pytest.raises(ShardError, match=r"train-000002\.idx.* is stale"):
        build(damaged)


def test_a_truncated_tar_is_named(damaged):
    tar = damaged / "train" / SHARD
    tar.write_bytes(tar.read_bytes()[:-3000])
    with pytest.raises(ShardError, match=r"train-000002\.tar has \d+ bytes.*truncated"):
        build(damaged)


def test_a_missing_tar_is_named(damaged):
    (damaged / "val" / "val-000001.tar").unlink()
    with pytest.raises(ShardError, match=r"val-000001\.tar is listed in the manifest but missing"):
        build_val_loader(config(damaged), 0, 1, CPU)


def test_a_shard_the_manifest_does_not_list_is_named(damaged):
    shutil.copy(damaged / "train" / SHARD, damaged / "train" / "train-000099.tar")
    with pytest.raises(ShardError, match=r"does not list: train-000099\.tar"):
        build(damaged)


def every_sample(change):
    """An edit for rewrite_shard that applies change(members, key) to each sample."""
    def edit(members: dict[str, bytes]) -> dict[str, bytes]:
        for key in {name.split(".")[0] for name in members}:
            change(members, key)
        return members
    return edit


CASES = {  # the whole shard is bad, so whatever the shuffle, a bad sample is met
    "missing .cls": (lambda m, k: m.pop(f"{k}.cls"), r"\.cls is missing"),
    "label out of range": (lambda m, k: m.update({f"{k}.cls": b"7"}),
                           r"label 7 is outside the 5 classes"),
    "label not a number": (lambda m, k: m.update({f"{k}.cls": b"x1"}),
                           r"\.cls is 'x1', not an integer"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_a_bad_sample_is_named(damaged, backend, case):
    change, message = CASES[case]
    rewrite_shard(damaged / "train", SHARD, every_sample(change))
    with pytest.raises(ShardError) as caught:
        epoch(build(damaged, backend))
    text = str(caught.value)
    assert re.search(rf"shard {SHARD}, sample n\d{{8}}_\d+\b", text)  # the shard and the key
    assert re.search(message, text), text
