"""The torch-facing loaders: exact epochs, data-wait per batch, resumable at any batch.

    loader = build_train_loader(cfg.data, dist.rank, dist.world_size, device)
    for epoch in range(loader.epoch, epochs):
        for images, labels in loader:          # the rest of `epoch`, on `device`
            wait = loader.last_wait_s          # seconds the loop waited for this batch
    checkpoint["data"] = loader.state_dict()   # per rank; JSON-able
    loader.load_state_dict(checkpoint["data"])

    for images, labels, valid in build_val_loader(cfg.data, rank, world, device):
        ...                                    # count only images[valid]

Every rank runs the same number of batches (epochs.py); docs/data.md has the details.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Protocol

import torch

from data_prep.manifest import Split, load_split
from pipeline.config import DataConfig
from pipeline.data import epochs
from pipeline.data.batches import RawBatch, check_labels


class EpochReader(Protocol):
    def __next__(self) -> RawBatch: ...
    def checkpoint(self) -> str | None: ...
    def close(self) -> None: ...


class Backend(Protocol):
    def train_epoch(self, epoch: int, start: int, checkpoint: str | None) -> EpochReader: ...
    def val_epoch(self) -> EpochReader: ...


class _Timed:
    """What the train and val loaders share: label checks, keys and data-wait."""

    def __init__(self, backend: Backend, split: Split, cfg: DataConfig, device: torch.device):
        self.backend, self.split, self.cfg, self.device = backend, split, cfg, device
        self.last_wait_s = 0.0  # seconds the last batch was waited for
        self.wait_s = 0.0  # summed over the current epoch (or val pass)
        self.last_keys: list[str] | None = None  # with cfg.return_keys

    def _next(self, reader: EpochReader) -> RawBatch:
        started = time.perf_counter()
        raw = next(reader)
        check_labels(raw.labels, self.split.num_classes, raw.sources)
        raw.labels = raw.labels.to(self.device, non_blocking=True)
        if self.cfg.return_keys:
            self.last_keys = [key for _, key in raw.sources()]
        self.last_wait_s = time.perf_counter() - started
        self.wait_s += self.last_wait_s
        return raw


class TrainLoader(_Timed):
    """(images, labels) batches of one rank, `batches_per_epoch` of them per epoch."""

    def __init__(self, backend: Backend, split: Split, cfg: DataConfig, rank: int,
                 world_size: int, device: torch.device):
        super().__init__(backend, split, cfg, device)
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = epochs.batches_per_epoch(split.num_samples, cfg.batch_size,
                                                      world_size)
        self.epoch, self.iteration = 0, 0
        self._reader: EpochReader | None = None
        self._restored: str | None = None  # a reader checkpoint waiting for the next __iter__

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches left in the current epoch; afterwards `epoch` has moved on."""
        self._roll_over()
        if self._reader is None:
            self._reader = self.backend.train_epoch(self.epoch, self.iteration, self._restored)
            self._restored = None
        reader = self._reader
        if self.iteration == 0:
            self.wait_s = 0.0
        # Stops early if set_epoch/load_state_dict replaced the reader meanwhile.
        while self._reader is reader and self.iteration < self.batches_per_epoch:
            try:
                raw = self._next(reader)
            except BaseException:
                self._close()  # free the workers/pipeline now; a retry resumes by skipping
                raise
            self.iteration += 1
            yield raw.images, raw.labels
        if self._reader is reader:
            self._roll_over()

    def set_epoch(self, epoch: int) -> None:
        """Go to the start of `epoch`. A no-op inside that epoch (e.g. after a resume), so
        calling it every epoch, the DistributedSampler habit, keeps a resumed position."""
        self._roll_over()
        if epoch != self.epoch:
            self._close()
            self.epoch, self.iteration, self._restored = epoch, 0, None

    def state_dict(self) -> dict[str, Any]:
        """Position plus DALI's reader checkpoint; JSON-able. Save one per rank. Changes
        nothing, so it can be called inside the training loop."""
        if self.iteration >= self.batches_per_epoch:  # the end of an epoch: the next one's start
            position, reader = (self.epoch + 1, 0), None
        else:
            position = (self.epoch, self.iteration)
            reader = self._reader.checkpoint() if self._reader is not None else self._restored
        return {"epoch": position[0], "iteration": position[1], "reader": reader,
                "rank": self.rank, "plan": self._plan()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where `state` was taken: from DALI's checkpoint when it is this
        rank's, else by deterministic skip. Mid-epoch needs the same plan (world size,
        batch, seed, ...); at an epoch boundary any plan resumes."""
        if state["iteration"] > 0 and state["plan"] != self._plan():
            changed = {k: (v, self._plan().get(k)) for k, v in state["plan"].items()
                       if self._plan().get(k) != v}
            raise ValueError(f"cannot resume mid-epoch ({state['epoch']}:{state['iteration']})"
                             f" with a different data plan, changed (saved, now): {changed}; "
                             "resume from a checkpoint taken at an epoch boundary")
        self._close()
        self.epoch, self.iteration = int(state["epoch"]), int(state["iteration"])
        same_rank = state.get("rank") == self.rank
        self._restored = state.get("reader") if same_rank and self.iteration > 0 else None

    def _plan(self) -> dict[str, Any]:
        cfg = self.cfg
        plan = {"backend": cfg.backend, "world_size": self.world_size,
                "batch_size": cfg.batch_size, "seed": cfg.seed, "shuffle_shards":
                cfg.shuffle_shards, "shuffle_buffer": cfg.shuffle_buffer,
                "num_samples": self.split.num_samples}
        if cfg.backend == "webdataset":  # workers split the rank's range
            plan["num_workers"] = cfg.num_workers
        return plan

    def _roll_over(self) -> None:
        if self.iteration >= self.batches_per_epoch:
            self._close()
            self.epoch, self.iteration = self.epoch + 1, 0

    def close(self) -> None:
        """Frees the reader (DALI pipeline or workers) now; the next iteration reopens it at
        the current position."""
        self._roll_over()
        if self._reader is not None:
            self._restored = self._reader.checkpoint() if self.iteration else None
        self._close()

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class ValLoader(_Timed):
    """(images, labels, valid) batches covering the rank's val samples once; padding has
    valid False, so summed over ranks every val image counts exactly once."""

    def __init__(self, backend: Backend, split: Split, cfg: DataConfig, world_size: int,
                 device: torch.device):
        super().__init__(backend, split, cfg, device)
        self.num_samples = split.num_samples
        self.steps = epochs.val_steps(split.num_samples, cfg.batch_size, world_size)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        reader, self.wait_s = self.backend.val_epoch(), 0.0
        try:
            for _ in range(self.steps):
                raw = self._next(reader)
                yield raw.images, raw.labels, raw.valid.to(self.device, non_blocking=True)
        finally:
            reader.close()


def build_train_loader(cfg: DataConfig, rank: int, world_size: int, device: torch.device,
                       hash_indexes: bool = True) -> TrainLoader:
    """hash_indexes=False: the indexes were hashed once for the job (manifest.load_split)."""
    split = _split(cfg, "train", rank, world_size, hash_indexes)
    return TrainLoader(_backend(cfg, split, rank, world_size, device), split, cfg, rank,
                       world_size, device)


def build_val_loader(cfg: DataConfig, rank: int, world_size: int, device: torch.device,
                     hash_indexes: bool = True) -> ValLoader:
    split = _split(cfg, "val", rank, world_size, hash_indexes)
    return ValLoader(_backend(cfg, split, rank, world_size, device), split, cfg, world_size,
                     device)


def _split(cfg: DataConfig, name: str, rank: int, world_size: int,
           hash_indexes: bool) -> Split:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    return load_split(cfg.shards, name, hash_indexes)


def _backend(cfg: DataConfig, split: Split, rank: int, world_size: int,
             device: torch.device) -> Backend:
    # Imported here so that the webdataset backend works where DALI is not installed.
    if cfg.backend == "dali":
        from pipeline.data.dali import DaliBackend
        return DaliBackend(cfg, split, rank, world_size, device)
    from pipeline.data.webdataset_backend import WebdatasetBackend
    return WebdatasetBackend(cfg, split, rank, world_size, device)
