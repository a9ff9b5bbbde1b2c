"""Cuts a split's inputs into shards: which input goes into which shard, in what order.

The plan is a pure function of the inputs and the arguments, so local workers and
SLURM array tasks can each write a disjoint set of its shards, and a rerun writes the
same shards. Train inputs are shuffled globally first: DALI only shuffles within a
small buffer, so class-sorted shards would give batches of one or two classes.
"""

from __future__ import annotations

import os

import numpy as np

from data_prep.imagenet import SourceError, SourceItem
from data_prep.shard_writer import ShardSpec


def plan_split(
    split: str,
    items: list[SourceItem],
    labels: dict[str, int],
    shuffle_seed: int | None,
    shard_size: int,
    shard_bytes: int | None,
) -> list[ShardSpec]:
    _check_unique_keys(items)
    ordered = sorted(items, key=lambda i: i.relpath)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(ordered))
        ordered = [ordered[i] for i in order]
    groups = _cut(ordered, shard_size, shard_bytes)
    return [ShardSpec(split, n, tuple(group), labels) for n, group in enumerate(groups)]


def _cut(items: list[SourceItem], max_count: int, max_bytes: int | None) -> list[list]:
    """Consecutive groups of at most max_count inputs and (where set) about max_bytes."""
    groups, current, current_bytes = [], [], 0
    for item in items:
        size = item.size if item.size >= 0 else _file_size(item)
        full = len(current) >= max_count or (
            max_bytes is not None and current and current_bytes + size > max_bytes
        )
        if full:
            groups.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += size
    if current:
        groups.append(current)
    return groups


def _file_size(item: SourceItem) -> int:
    return os.stat(item.path).st_size


def _check_unique_keys(items: list[SourceItem]) -> None:
    seen: dict[str, str] = {}
    for item in items:
        if item.key in seen:
            raise SourceError(
                f"two inputs map to the sample key '{item.key}': {seen[item.key]} and "
                f"{item.relpath}; keys come from file names, which must be unique in a split"
            )
        seen[item.key] = item.relpath
