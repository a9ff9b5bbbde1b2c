"""Checks of an allocation before a long run; every failure names its host and rank.

    failures = run_preflight(cfg, env, shards_per_node=2)   # collective; rank 0 prints

1. Every rank: host, local rank, device (GPU name and memory), CPU affinity.
2. All-reduce bus bandwidth inside each node and across nodes (one rank per node): NCCL
   on GPUs, gloo on CPU, printed beside what such links give.
3. The shards from the first rank of each node: classes.json, the manifests and indexes
   (the loader's own checks), then a sample of tars hashed against the manifest's sha256
   (each node a different sample), with the read MB/s.
4. The synchronized-BN groups: which nodes each spans; `sync_bn: node` must give one
   group per node.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from data_prep.manifest import ShardError, load_split, read_manifest
from pipeline.config import Config
from pipeline.dist.environment import node_name
from pipeline.dist.group import DistEnv, device_name
from pipeline.models.syncbn import sync_group_size

SPLITS = ("train", "val")
# What an 8-GPU H100 node and a 400 Gb/s NIC give in an all-reduce (performance facts).
EXPECTED = {"cuda": {"node": "~370 GB/s (NVLink 4, 8 x H100)",
                     "cross": "~46 GB/s per 400 Gb/s InfiniBand NIC"},
            "cpu": {"node": "no reference (gloo over loopback TCP)",
                    "cross": "no reference (gloo over TCP)"}}


@dataclass(frozen=True)
class RankInfo:
    rank: int
    local_rank: int
    host: str  # SLURM's node name where there is one
    device: str
    cpus: tuple[int, ...]


def run_preflight(cfg: Config, env: DistEnv, shards_per_node: int = 2) -> list[str]:
    """Collective. The failures (empty when all is well), the same list on every rank."""
    ranks = _gather(RankInfo(env.rank, env.local_rank, node_name(), device_name(env.device),
                             tuple(sorted(os.sched_getaffinity(0)))))
    hosts = list(dict.fromkeys(r.host for r in ranks))  # in rank order
    _print(env, _rank_table(ranks))
    failures = _bandwidth(env, ranks, hosts)
    host = ranks[env.rank].host
    leader = next(r.rank for r in ranks if r.host == host)  # the node's first rank
    shard_report = _check_shards(cfg, hosts.index(host), len(hosts),
                                 shards_per_node) if env.rank == leader else None
    for info, report in zip(ranks, _gather(shard_report), strict=True):
        if report is not None:
            lines, problems = report
            _print(env, [f"shards from {info.host} (rank {info.rank}): {line}" for line in lines])
            failures += [f"{info.host} rank {info.rank}: {p}" for p in problems]
    failures += _bn_groups(cfg, env, ranks, hosts)
    _print(env, [f"FAIL {f}" for f in failures] or ["preflight passed"])
    return failures


def _gather(obj) -> list:
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _print(env: DistEnv, lines: list[str]) -> None:
    if env.is_main:
        print("\n".join(lines), flush=True)


def _rank_table(ranks: list[RankInfo]) -> list[str]:
    lines = ["rank  local  host            device                          CPUs"]
    for r in ranks:
        lines.append(f"{r.rank:<5} {r.local_rank:<6} {r.host:<15} {r.device:<31} "
                     f"{_ranges(r.cpus)}")
    return lines


def _ranges(cpus: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> '0-2,5' (n CPUs)."""
    parts, start = [], None
    for i, c in enumerate(cpus):
        if start is None:
            start = c
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            parts.append(f"{start}-{c}" if c != start else f"{c}")
            start = None
    return f"{','.join(parts)} ({len(cpus)})"


def _bandwidth(env: DistEnv, ranks: list[RankInfo], hosts: list[str]) -> list[str]:
    """Bus bandwidth of an all-reduce inside every node and across the nodes' first ranks."""
    by_host = [[r.rank for r in ranks if r.host == h] for h in hosts]
    failures = []
    # Every rank must create every group, in the same order.
    node_group, _ = dist.new_subgroups_by_enumeration(by_host)
    cross_ranks = [members[0] for members in by_host]
    cross_group = dist.new_group(cross_ranks)
    mine = next(m for m in by_host if env.rank in m)
    kind = env.device.type if env.device.type in EXPECTED else "cpu"
    for label, members, group in (("node", mine, node_group), ("cross", cross_ranks,
                                                                  cross_group)):
        if len(members) < 2 or env.rank not in members:
            rate = None
        else:
            try:
                rate = _bus_bandwidth(group, len(members), env.device)
            except RuntimeError as err:
                failures.append(f"{node_name()} rank {env.rank}: all-reduce ({label}) failed: "
                                f"{err}")
                rate = None
        rates = _gather(rate)
        measured = [x for x in rates if x is not None]
        what = "inside each node" if label == "node" else "across nodes"
        if measured:
            _print(env, [f"all-reduce bus bandwidth {what}: {min(measured):.2f}-"
                         f"{max(measured):.2f} GB/s over {len(measured)} ranks; expected "
                         f"{EXPECTED[kind][label]}"])
        else:
            _print(env, [f"all-reduce {what}: not measured (one rank per group)"])
    return _gather_failures(failures)


def _bus_bandwidth(group, size: int, device: torch.device, iters: int = 5) -> float:
    """GB/s as nccl-tests count it: bytes x 2(n-1)/n per all-reduce."""
    nbytes = (256 << 20) if device.type == "cuda" else (16 << 20)
    x = torch.ones(nbytes // 4, device=device)
    dist.all_reduce(x, group=group)  # warm-up: connections, buffers
    _sync(device)
    started = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(x, group=group)
    _sync(device)
    seconds = (time.perf_counter() - started) / iters
    return nbytes * 2 * (size - 1) / size / seconds / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gather_failures(failures: list[str]) -> list[str]:
    return [f for rank_failures in _gather(failures) for f in rank_failures]


def _check_shards(cfg: Config, node: int, nodes: int,
                  per_node: int) -> tuple[list[str], list[str]]:
    """(report lines, problems) of this node's sample of the shards."""
    lines, problems, root = [], [], Path(cfg.data.shards)
    for split in SPLITS:
        try:
            load_split(root, split)
            shards = read_manifest(root / split)["shards"]
        except (ShardError, OSError, ValueError) as err:
            problems.append(f"{split}: {err}")
            continue
        sample = shards[node::nodes][:per_node]
        read, started = 0, time.perf_counter()
        for entry in sample:
            path = root / split / entry["name"]
            try:
                digest, size = _hash(path)
            except OSError as err:
                problems.append(f"shard {path} is unreadable: {err}")
                continue
            read += size
            if digest != entry["sha256"]:
                problems.append(f"shard {path} does not match its manifest's sha256; rerun "
                                "data_prep/shard.py --verify on it")
        seconds = time.perf_counter() - started
        lines.append(f"{split}: manifest and {len(shards)} indexes ok, {len(sample)} tars "
                     f"hashed ({read / 1e6:.0f} MB at {read / 1e6 / max(seconds, 1e-9):.0f} "
                     "MB/s)")
    return lines, problems


def _hash(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _bn_groups(cfg: Config, env: DistEnv, ranks: list[RankInfo],
               hosts: list[str]) -> list[str]:
    """Prints each BN group's nodes; a 'node' group that is not one whole node fails."""
    if not cfg.model.bn:
        return []
    try:
        size = sync_group_size(cfg.model.sync_group, env.world_size, env.ranks_per_node)
    except ValueError as err:
        return [f"model.sync_bn = {cfg.model.sync_bn}: {err}"]
    failures, lines = [], [f"sync BN ({cfg.model.sync_bn}): groups of {size} ranks"]
    for start in range(0, env.world_size, size):
        members = ranks[start:start + size]
        on = sorted({r.host for r in members}, key=hosts.index)
        lines.append(f"  ranks {start}-{start + size - 1}: {', '.join(on)}")
        whole_node = len(on) == 1 and all(r.host != on[0] for r in ranks
                                          if r not in members)
        if cfg.model.sync_bn == "node" and not whole_node:
            failures.append(f"BN group of ranks {start}-{start + size - 1} is not one whole "
                            f"node ({', '.join(on)}): ranks are not numbered node by node")
    _print(env, lines)
    return failures
