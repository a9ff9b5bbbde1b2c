"""The fallback backend: the same shards through `webdataset` and DataLoader workers.

For machines without DALI and as the loader benchmark's baseline. It follows the plan of
epochs.py exactly as the DALI backend does (epoch shard order, rank ranges, step counts,
val padding); within a rank, DataLoader worker w makes batches w, w+W, ... (the order
the DataLoader collects them in) from its own contiguous part of the rank's range, with
its own shuffle buffer. Every random draw of a sample comes from a generator seeded by
(run seed, rank, epoch, worker, position), so resuming skips batches without decoding
them: the cost is reading, not decoding, the skipped part of the epoch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_prep.manifest import Shard, ShardError, Split
from pipeline.config import DataConfig
from pipeline.data import cpu_transforms, epochs
from pipeline.data.batches import RawBatch, to_model_layout

Piece = tuple[str, str, int, int]  # tar path, shard name, samples to skip, samples to take
PAD_KEY = ("", "")  # the (shard, key) of a val padding sample


@dataclass(frozen=True)
class WorkerPlan:
    """What one DataLoader worker reads and makes in one epoch."""

    pieces: tuple[Piece, ...]  # exactly its batches' samples
    skip: int  # leading batches already consumed (resume): read, not decoded
    seed: int | None  # None for val: in order, no augmentation
    pad: int = 0  # val: blank samples after the real ones


def _pieces(shards: tuple[Shard, ...], start: int, end: int) -> tuple[Piece, ...]:
    return tuple((str(s.tar), s.name, skip, count)
                 for s, skip, count in epochs.segments(shards, start, end))


def train_plans(cfg: DataConfig, split: Split, rank: int, world: int, epoch: int,
                start: int) -> list[WorkerPlan]:
    """One plan per worker, rotated so that DataLoader worker 0 makes batch `start`."""
    workers = max(1, cfg.num_workers)
    steps = epochs.batches_per_epoch(split.num_samples, cfg.batch_size, world)
    shards = epochs.epoch_shards(split, cfg.seed, epoch, cfg.shuffle_shards)
    first, _ = epochs.rank_range(split.num_samples, rank, world)
    plans, offset = [], first
    for w, batches in enumerate(epochs.worker_batches(steps, workers)):
        count = len(batches) * cfg.batch_size
        seed = epochs.worker_seed(cfg.seed, rank, epoch, w)
        skip = len(range(w, start, workers))
        plans.append(WorkerPlan(_pieces(shards, offset, offset + count), skip, seed))
        offset += count
    turn = start % workers
    return plans[turn:] + plans[:turn]


def val_plans(cfg: DataConfig, split: Split, rank: int, world: int) -> list[WorkerPlan]:
    """The rank's val range in order, padded with blank samples to full batches."""
    steps = epochs.val_steps(split.num_samples, cfg.batch_size, world)
    first, end = epochs.rank_range(split.num_samples, rank, world)
    plans, position = [], 0
    for batches in epochs.worker_batches(steps, cfg.num_workers):
        count = len(batches) * cfg.batch_size
        real = max(0, min(count, end - first - position))
        pieces = _pieces(split.shards, first + position, first + position + real)
        plans.append(WorkerPlan(pieces, 0, None, pad=count - real))
        position += count
    return plans


def _samples(pieces: tuple[Piece, ...]) -> Iterator[tuple[tuple[str, str], bytes, int]]:
    """((shard, key), jpg, label) of every planned sample, read with webdataset."""
    for path, shard, skip, count in pieces:
        stream = wds.DataPipeline(wds.SimpleShardList([path]), wds.tarfile_to_samples())
        taken = 0
        for index, sample in enumerate(stream):
            if index < skip:
                continue
            yield _parse(shard, sample)
            taken += 1
            if taken == count:
                break
        if taken < count:
            raise ShardError(f"shard {shard} ended after {skip + taken} samples; its index "
                             f"and manifest promise at least {skip + count}")


def _parse(shard: str, sample: dict) -> tuple[tuple[str, str], bytes, int]:
    key = sample["__key__"]
    for ext in ("jpg", "cls"):
        if ext not in sample:
            raise ShardError(f"shard {shard}, sample {key}: {key}.{ext} is missing")
    try:
        label = int(sample["cls"].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        text = sample["cls"].decode(errors="replace")
        raise ShardError(f"shard {shard}, sample {key}: {key}.cls is {text!r}, "
                         "not an integer") from None
    return (shard, key), sample["jpg"], label


def _shuffled(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """A shuffle buffer: hold `size` items, hand out a random one for each new one."""
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = int(rng.integers(len(buffer)))
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


class _Stream(IterableDataset):
    """Each DataLoader worker makes the batches of its plan: (uint8 NHWC, labels, keys)."""

    def __init__(self, plans: list[WorkerPlan], cfg: DataConfig):
        self.plans, self.cfg = plans, cfg

    def __iter__(self):
        info = get_worker_info()
        plan = self.plans[info.id if info is not None else 0]
        if plan.seed is None:
            yield from self._val(plan)
        else:
            yield from self._train(plan)

    def _train(self, plan: WorkerPlan):
        cfg = self.cfg
        size = max(1, cfg.shuffle_buffer // max(1, cfg.num_workers))
        stream = _shuffled(_samples(plan.pieces), size, np.random.default_rng([plan.seed, 0]))
        first = plan.skip * cfg.batch_size
        images = ((cpu_transforms.train_image(jpg, np.random.default_rng([plan.seed, 1, i]), cfg),
                   label, key)
                  for i, (key, jpg, label) in enumerate(stream) if i >= first)
        yield from _batches(images, cfg.batch_size)

    def _val(self, plan: WorkerPlan):
        cfg = self.cfg
        blank = np.zeros((cfg.image_size, cfg.image_size, 3), np.uint8)
        real = ((cpu_transforms.val_image(jpg, cfg), label, key)
                for key, jpg, label in _samples(plan.pieces))
        padding = itertools.repeat((blank, 0, PAD_KEY), plan.pad)
        yield from _batches(itertools.chain(real, padding), cfg.batch_size)


def _batches(items: Iterator, size: int) -> Iterator[tuple]:
    """Full batches of `size` (image, label, key) items, collated; a partial one is dropped."""
    while len(chunk := list(itertools.islice(items, size))) == size:
        yield _collate(chunk)


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
    images = torch.from_numpy(np.stack([image for image, _, _ in items]))
    labels = torch.tensor([label for _, label, _ in items], dtype=torch.int64)
    return images, labels, [key for _, _, key in items]


def _as_is(batch: tuple) -> tuple:
    return batch  # batches are made in the workers; the default would turn tuples to lists


class WebdatasetEpoch:
    """A DataLoader over the plans; normalizes each batch on the training device."""

    def __init__(self, plans: list[WorkerPlan], cfg: DataConfig, device: torch.device):
        self.cfg, self.device, self.val = cfg, device, plans[0].seed is None
        loader = DataLoader(_Stream(plans, cfg), batch_size=None, num_workers=cfg.num_workers,
                            prefetch_factor=cfg.prefetch if cfg.num_workers else None,
                            pin_memory=device.type == "cuda", collate_fn=_as_is)
        self.iterator = iter(loader)
        scale = torch.tensor([255 * s for s in cfg.std], device=device)
        self.scale, self.shift = 1 / scale, torch.tensor(cfg.mean, device=device) * 255 / scale

    def __next__(self) -> RawBatch:
        try:
            images, labels, keys = next(self.iterator)
        except Exception:
            self.close()  # stop the workers now, not when a forked child collects the iterator
            raise
        images = images.to(self.device, non_blocking=True).float()
        images = to_model_layout(images.mul_(self.scale).sub_(self.shift), True, self.cfg.dtype)
        if not self.cfg.channels_last:
            images = images.contiguous()
        valid = torch.tensor([key != PAD_KEY for key in keys]) if self.val else None
        return RawBatch(images, labels, lambda: keys, valid)

    def checkpoint(self) -> None:
        return None  # resume replays the plan instead (module docstring)

    def close(self) -> None:
        if self.iterator is not None and hasattr(self.iterator, "_shutdown_workers"):
            self.iterator._shutdown_workers()  # also reached through an exception's traceback
        self.iterator = None


class WebdatasetBackend:
    """Opens webdataset epochs for one rank."""

    def __init__(self, cfg: DataConfig, split: Split, rank: int, world: int,
                 device: torch.device):
        self.cfg, self.split, self.rank, self.world, self.device = cfg, split, rank, world, device

    def train_epoch(self, epoch: int, start: int, checkpoint: str | None) -> WebdatasetEpoch:
        plans = train_plans(self.cfg, self.split, self.rank, self.world, epoch, start)
        return WebdatasetEpoch(plans, self.cfg, self.device)

    def val_epoch(self) -> WebdatasetEpoch:
        return WebdatasetEpoch(val_plans(self.cfg, self.split, self.rank, self.world),
                               self.cfg, self.device)
