"""The GPU check, part 2 (bench/gpu_check.sh dali): DALI's mixed decoding (nvJPEG and the
hardware decoder) against its CPU backend on the same images, exact epochs and an exact
mid-epoch resume with the pipeline on the device."""

from __future__ import annotations

import pytest
import torch
from loader_helpers import BATCH, config, epoch, pixels, samples, stopped_after

from pipeline.data import build_train_loader, build_val_loader

CPU = torch.device("cpu")
TRAIN_SAMPLES = 50


def _val(cfg, device: torch.device) -> dict[str, torch.Tensor]:
    loader = build_val_loader(cfg, 0, 1, device)
    seen = {}
    for images, _, valid in loader:
        for key, image, ok in zip(loader.last_keys, pixels(images.cpu(), cfg), valid.cpu(),
                                  strict=True):
            if ok:
                seen[key] = image
    return seen


@pytest.mark.parametrize("hw_decoder_load", [0.0, 0.9])
def test_mixed_decoding_matches_the_cpu_backend(device, shards, hw_decoder_load):
    cfg = config(shards, backend="dali", hw_decoder_load=hw_decoder_load)
    on_device, on_cpu = _val(cfg, device), _val(cfg, CPU)
    assert on_device.keys() == on_cpu.keys() and len(on_cpu) == 15
    for key, image in on_device.items():  # nvJPEG's IDCT and libjpeg's differ a little
        assert (image - on_cpu[key]).abs().mean() < 2.0, key


def test_every_sample_once_per_epoch_and_equal_batches_per_rank(device, shards):
    truth, world = samples(shards, "train"), 2
    loaders = [build_train_loader(config(shards, backend="dali"), rank, world, device)
               for rank in range(world)]
    for _ in range(2):
        per_rank = [[key for _, _, keys in epoch(loader) for key in keys] for loader in loaders]
        steps = TRAIN_SAMPLES // (BATCH * world)
        assert [len(keys) for keys in per_rank] == [steps * BATCH] * world
        union = [key for keys in per_rank for key in keys]
        assert len(set(union)) == len(union) and set(union) <= set(truth)
        assert len(union) == TRAIN_SAMPLES - TRAIN_SAMPLES % (BATCH * world)
    images, _ = next(iter(loaders[0]))
    assert images.device.type == device.type


@pytest.mark.parametrize("stop", [1, 5, 8])  # inside epoch 0, before its end, in epoch 1
def test_a_mid_epoch_resume_on_the_device_gives_the_same_batches(device, shards, stop):
    cfg = config(shards, backend="dali", num_workers=2, color_jitter=0.2)
    reference = build_train_loader(cfg, 1, 2, device)
    expected = epoch(reference) + epoch(reference)
    state = stopped_after(cfg, stop, 1, 2, device)
    resumed = build_train_loader(cfg, 1, 2, device)
    resumed.load_state_dict(state)
    resumed.set_epoch(state["epoch"])
    got = epoch(resumed) + (epoch(resumed) if stop < 6 else [])
    assert [k for _, _, k in got] == [k for _, _, k in expected[stop:]]
    for (images, labels, _), (want, want_labels, _) in zip(got, expected[stop:], strict=True):
        assert torch.equal(images, want) and torch.equal(labels, want_labels)
