"""Which samples each rank reads in an epoch, and the seeds it reads them with.

Both backends follow this plan, so they shard and count the same way:

- Train: the shard list is re-ordered every epoch (one order for all ranks), and the
  concatenated samples are cut into `world_size` contiguous ranges, the way DALI's
  reader cuts them for shard_id / num_shards. Every rank runs
  `batches_per_epoch = num_samples // (batch_size * world_size)` batches; the rest of its
  range (fewer than batch_size + 1 samples per rank) is that epoch's dropped remainder.
- Val: the same cut in manifest order, padded to `val_steps` full batches on every rank;
  `valid_in_batch` says how many leading samples of a batch are real.
"""

from __future__ import annotations

import math

import numpy as np

from data_prep.manifest import Shard, Split

# Stream tags keep the seeds of different uses apart.
_ORDER, _TRAIN, _WORKER = 1, 2, 3


def derive_seed(seed: int, *parts: int) -> int:
    """A 31-bit seed from the run seed and the parts (rank, epoch, ...): stable anywhere."""
    state = np.random.SeedSequence([seed, *parts]).generate_state(1)[0]
    return int(state) & 0x7FFFFFFF


def train_seed(seed: int, rank: int, epoch: int) -> int:
    """The DALI seed of one rank in one epoch, distinct for every (rank, epoch) of a run
    by construction: DALI keeps only the low 32 bits of a seed, where hashing every pair
    could collide, so epoch and rank are added to a per-run base in separate bit fields."""
    if not (0 <= rank < 1 << 15 and 0 <= epoch < 1 << 16):
        raise ValueError(f"rank {rank} / epoch {epoch}: expected rank < 32768, epoch < 65536")
    return (derive_seed(seed, _TRAIN) + (epoch << 15) + rank) & 0x7FFFFFFF


def worker_seed(seed: int, rank: int, epoch: int, worker: int) -> int:
    return derive_seed(seed, _WORKER, rank, epoch, worker)


def batches_per_epoch(num_samples: int, batch_size: int, world_size: int) -> int:
    """Full global batches in an epoch; the remainder is dropped (docs/data.md)."""
    steps = num_samples // (batch_size * world_size)
    if steps == 0:
        raise ValueError(f"{num_samples} samples do not fill one global batch of "
                         f"{batch_size} x {world_size} ranks")
    return steps


def val_steps(num_samples: int, batch_size: int, world_size: int) -> int:
    """Batches every rank runs so that the largest rank range is covered."""
    if num_samples < world_size:
        raise ValueError(f"{num_samples} val samples cannot be spread over {world_size} ranks")
    return math.ceil(math.ceil(num_samples / world_size) / batch_size)


def rank_range(num_samples: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, end) of the rank's samples: DALI's shard_id/num_shards cut."""
    return (num_samples * rank // world_size, num_samples * (rank + 1) // world_size)


def valid_in_batch(rank_samples: int, step: int, batch_size: int) -> int:
    """How many leading samples of the rank's batch `step` are real (the rest is padding)."""
    return max(0, min(batch_size, rank_samples - step * batch_size))


def epoch_shards(split: Split, seed: int, epoch: int, shuffle: bool) -> tuple[Shard, ...]:
    """The epoch's shard order: the same on every rank, a new one every epoch."""
    if not shuffle:
        return split.shards
    order = np.random.default_rng(derive_seed(seed, _ORDER, epoch)).permutation(len(split.shards))
    return tuple(split.shards[i] for i in order)


def segments(shards: tuple[Shard, ...], start: int, end: int) -> list[tuple[Shard, int, int]]:
    """The samples [start, end) of the concatenated shards as (shard, skip, count) pieces."""
    pieces, offset = [], 0
    for shard in shards:
        lo, hi = max(start, offset), min(end, offset + shard.samples)
        if lo < hi:
            pieces.append((shard, lo - offset, hi - lo))
        offset += shard.samples
    return pieces


def worker_batches(steps: int, workers: int) -> list[range]:
    """Batch numbers each DataLoader worker makes: j goes to worker j % workers, the order
    in which the DataLoader collects them."""
    workers = max(1, workers)
    return [range(w, steps, workers) for w in range(workers)]
