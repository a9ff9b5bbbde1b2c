"""Who this process is, as its launcher describes it: pure functions of a mapping.

    launch = detect_launch(os.environ)      # tests pass a dict

Launchers, in order of precedence:
- torchrun (or any launcher that sets RANK / WORLD_SIZE / LOCAL_RANK, MASTER_ADDR/PORT);
- srun: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, tasks per node from
  SLURM_STEP_TASKS_PER_NODE; the master is SLURM_LAUNCH_NODE_IPADDR (the first node of
  the step, an address, so node names need not resolve) unless MASTER_ADDR is set, and the
  port derives from the job id unless MASTER_PORT is set;
- neither: a single process, with a one-rank process group on a free local port, so the
  training code has one path whatever the world size.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Launch:
    """What the launcher says about this process."""

    launcher: str  # torchrun | slurm | single
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int


def detect_launch(environ: Mapping[str, str] = os.environ) -> Launch:
    """The launch as the environment describes it (pure: tests pass a dict)."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        world = int(environ["WORLD_SIZE"])
        return Launch("torchrun", int(environ["RANK"]), world,
                      int(environ.get("LOCAL_RANK", 0)),
                      int(environ.get("LOCAL_WORLD_SIZE", world)),
                      environ.get("MASTER_ADDR", "127.0.0.1"),
                      int(environ.get("MASTER_PORT", 29500)))
    if "SLURM_PROCID" in environ and "SLURM_NTASKS" in environ:
        node = int(environ.get("SLURM_NODEID", 0))
        per_node = tasks_per_node(environ.get("SLURM_STEP_TASKS_PER_NODE")
                                  or environ.get("SLURM_TASKS_PER_NODE", "1"))
        job = int(environ.get("SLURM_JOB_ID", 0))
        return Launch("slurm", int(environ["SLURM_PROCID"]), int(environ["SLURM_NTASKS"]),
                      int(environ.get("SLURM_LOCALID", 0)), per_node[min(node, len(per_node) - 1)],
                      environ.get("MASTER_ADDR") or environ.get("SLURM_LAUNCH_NODE_IPADDR",
                                                                 "127.0.0.1"),
                      int(environ.get("MASTER_PORT", 20000 + job % 20000)))
    return Launch("single", 0, 1, 0, 1, "127.0.0.1", free_port())


def tasks_per_node(text: str) -> list[int]:
    """SLURM's compressed list, e.g. '8(x3),4' -> [8, 8, 8, 4]."""
    counts = []
    for part in text.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise ValueError(f"cannot read SLURM tasks per node {text!r}")
        counts += [int(match[1])] * int(match[2] or 1)
    return counts


def free_port() -> int:
    """A TCP port nobody listens on now (for a one-machine rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
