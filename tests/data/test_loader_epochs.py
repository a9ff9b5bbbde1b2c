"""Exact epochs: ranks simulated in one process, one loader per rank (docs/data.md)."""

from __future__ import annotations

import pytest
import torch
from loader_helpers import BATCH, config, epoch, samples

from pipeline.data import build_train_loader, build_val_loader, epochs

CPU = torch.device("cpu")
BACKENDS = ["dali", "webdataset"]
TRAIN_SAMPLES = 50


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("world", [1, 2, 3])
def test_train_epochs_split_samples_between_ranks(shards, backend, world):
    truth = samples(shards, "train")
    loaders = [build_train_loader(config(shards, backend=backend), rank, world, CPU)
               for rank in range(world)]
    steps = TRAIN_SAMPLES // (BATCH * world)
    orders = []
    for _ in range(2):
        per_rank = [[key for _, _, keys in epoch(loader) for key in keys] for loader in loaders]
        assert [len(keys) for keys in per_rank] == [steps * BATCH] * world  # same batch count
        union = [key for keys in per_rank for key in keys]
        assert len(set(union)) == len(union)  # disjoint ranks, nothing twice in an epoch
        assert set(union) <= set(truth)
        assert len(union) == TRAIN_SAMPLES - TRAIN_SAMPLES % (BATCH * world)  # the remainder
        orders.append(union)
    assert orders[0] != orders[1]  # a new order every epoch
    assert [loader.epoch for loader in loaders] == [2] * world


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_epoch_has_its_own_augmentations(shards, backend):
    """Same first samples (no shuffling), different crops: the seed follows the epoch."""
    cfg = config(shards, backend=backend, shuffle_shards=False, shuffle_buffer=1)
    loader = build_train_loader(cfg, 0, 1, CPU)
    first, again = epoch(loader)[0], epoch(loader)[0]
    assert first[2] == again[2] and not torch.equal(first[0], again[0])


def test_no_two_ranks_or_epochs_share_a_seed():
    seeds = {epochs.train_seed(0, rank, e) for rank in range(512) for e in range(100)}
    assert len(seeds) == 512 * 100
    assert epochs.train_seed(0, 3, 7) == epochs.train_seed(0, 3, 7) != epochs.train_seed(1, 3, 7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_val_covers_every_sample_exactly_once(shards, backend, world):
    truth = samples(shards, "val")
    loaders = [build_val_loader(config(shards, backend=backend), rank, world, CPU)
               for rank in range(world)]
    counted, batches = [], []
    for loader in loaders:
        rank_batches = 0
        for _, _, valid in loader:
            counted += [key for key, ok in zip(loader.last_keys, valid, strict=True) if ok]
            rank_batches += 1
        batches.append(rank_batches)
    assert len(set(batches)) == 1  # every rank takes part in every eval step
    assert sorted(counted) == sorted(truth)  # 15 images: each once, on any world size
