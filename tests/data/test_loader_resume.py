"""Resume: a rebuilt loader given the saved state continues with the very same batches."""

from __future__ import annotations

import pytest
import torch
from loader_helpers import config, epoch
from loader_helpers import stopped_after as helpers_stopped_after

from pipeline.data import build_train_loader

CPU = torch.device("cpu")
RANK, WORLD = 1, 2  # 6 steps per epoch


def reference(cfg) -> list:
    """Two uninterrupted epochs of rank 1."""
    loader = build_train_loader(cfg, RANK, WORLD, CPU)
    return epoch(loader) + epoch(loader)


def stopped_after(cfg, batches: int) -> dict:
    return helpers_stopped_after(cfg, batches, RANK, WORLD, CPU)


def assert_same(got: list, expected: list) -> None:
    assert [keys for _, _, keys in got] == [keys for _, _, keys in expected]
    for (images, labels, _), (want_images, want_labels, _) in zip(got, expected, strict=True):
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)


@pytest.mark.parametrize("backend, reader_state", [
    ("dali", "checkpoint"), ("dali", "skip"), ("webdataset", "skip")])
@pytest.mark.parametrize("stop", [1, 5, 6, 8])  # in epoch 0, before/at its end, in epoch 1
def test_resume_gives_the_uninterrupted_batches(shards, backend, reader_state, stop):
    cfg = config(shards, backend=backend, num_workers=2, color_jitter=0.2)
    expected = reference(cfg)
    state = stopped_after(cfg, stop)
    assert (state["epoch"], state["iteration"]) == divmod(stop, 6)
    if reader_state == "skip":  # e.g. another rank's state: DALI replays instead
        state["reader"] = None
    elif stop % 6:
        assert state["reader"]  # DALI's own checkpoint of the reader and the RNGs
    resumed = build_train_loader(cfg, RANK, WORLD, CPU)
    resumed.load_state_dict(state)
    resumed.set_epoch(state["epoch"])  # the DistributedSampler habit keeps the position
    got = epoch(resumed) + (epoch(resumed) if stop < 6 else [])
    assert_same(got, expected[stop:])
    assert resumed.epoch == 2


def test_a_state_before_the_first_batch_starts_the_epoch(shards):
    cfg = config(shards)
    loader = build_train_loader(cfg, RANK, WORLD, CPU)
    loader.load_state_dict(stopped_after(cfg, 0))
    assert_same(epoch(loader), reference(cfg)[:6])


def test_mid_epoch_resume_needs_the_same_plan(shards):
    cfg = config(shards)
    state = stopped_after(cfg, 2)
    other_world = build_train_loader(cfg, 0, 3, CPU)
    with pytest.raises(ValueError, match="world_size"):
        other_world.load_state_dict(state)
    boundary = stopped_after(cfg, 6)  # epoch boundaries resume on any plan
    other_world.load_state_dict(boundary)
    assert (other_world.epoch, other_world.iteration) == (1, 0)


def test_saving_inside_the_loop_does_not_disturb_it(shards):
    cfg = config(shards)
    loader = build_train_loader(cfg, RANK, WORLD, CPU)
    states, keys = [], []
    for _, _ in loader:
        states.append(loader.state_dict())
        keys.append(loader.last_keys)
    assert [(s["epoch"], s["iteration"]) for s in states] == [(0, i) for i in range(1, 6)] + [
        (1, 0)]
    assert keys == [k for _, _, k in reference(cfg)[:6]] and loader.epoch == 1


@pytest.mark.parametrize("backend", ["dali", "webdataset"])
def test_close_frees_the_reader_and_the_next_pass_goes_on_where_it_stopped(shards, backend):
    """What the trainer does with precise BN's second loader after each use."""
    cfg = config(shards, backend=backend)
    expected = reference(cfg)[:6]
    loader = build_train_loader(cfg, RANK, WORLD, CPU)
    first = [(images, labels, loader.last_keys)
             for _, (images, labels) in zip(range(2), loader, strict=False)]
    loader.close()
    assert loader._reader is None  # no pipeline or workers held between uses
    rest = epoch(loader)
    assert_same(first + rest, expected)
