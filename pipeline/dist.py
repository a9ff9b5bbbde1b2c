"""Who this process is: one explicit object, built once from torchrun or SLURM variables.

    env = init_distributed(cfg.dist)     # process group up, device chosen
    if env.is_main: ...                  # rank-0-only actions ask it
    shutdown(env)

Launchers, in order of precedence:
- torchrun (or any launcher that sets RANK / WORLD_SIZE / LOCAL_RANK, MASTER_ADDR/PORT);
- srun: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, tasks per node from
  SLURM_STEP_TASKS_PER_NODE; the master is SLURM_LAUNCH_NODE_IPADDR (the first node of
  the step, an address, so node names need not resolve) unless MASTER_ADDR is set, and the
  port derives from the job id unless MASTER_PORT is set;
- neither: a single process, with a one-rank process group on a free local port, so the
  training code has one path whatever the world size.
A rank uses GPU `local_rank`, or GPU 0 when the launcher shows it exactly one
(CUDA_VISIBLE_DEVICES narrowed per task, as `srun --gpus-per-task=1` does).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from pipeline.config import DistConfig


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


@dataclass(frozen=True)
class DistEnv:
    launch: Launch
    device: torch.device
    backend: str

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def local_rank(self) -> int:
        return self.launch.local_rank

    @property
    def gpus_per_node(self) -> int:
        return self.launch.local_world_size

    @property
    def is_main(self) -> bool:
        return self.launch.rank == 0


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


def pick_device(cfg: DistConfig, launch: Launch) -> torch.device:
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return torch.device("cpu")
    visible = torch.cuda.device_count()
    if visible == 0:
        raise RuntimeError("dist.device = cuda but no GPU is visible to rank "
                           f"{launch.rank} (CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    if visible == 1:
        return torch.device("cuda", 0)
    if launch.local_rank >= visible:
        raise RuntimeError(f"local rank {launch.local_rank} has no GPU: {visible} are visible; "
                           "start one task per GPU")
    return torch.device("cuda", launch.local_rank)


def init_distributed(cfg: DistConfig, environ: Mapping[str, str] = os.environ) -> DistEnv:
    """Process group (NCCL on GPUs, gloo on CPU) and device; reuses an existing group."""
    launch = detect_launch(environ)
    device = pick_device(cfg, launch)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = cfg.backend if cfg.backend != "auto" else (
        "nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():  # e.g. tests that set the group up themselves
        launch = _from_group(launch)
        return DistEnv(launch, device, dist.get_backend())
    dist.init_process_group(
        backend, init_method=f"tcp://{_host(launch.master_addr)}:{launch.master_port}",
        rank=launch.rank, world_size=launch.world_size,
        timeout=timedelta(seconds=cfg.timeout_s),
        device_id=device if device.type == "cuda" else None)
    return DistEnv(launch, device, backend)


def shutdown(env: DistEnv) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _from_group(launch: Launch) -> Launch:
    rank, world = dist.get_rank(), dist.get_world_size()
    local_world = launch.local_world_size if launch.world_size == world else world
    return Launch(launch.launcher, rank, world, rank % local_world, local_world,
                  launch.master_addr, launch.master_port)


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr  # IPv6 literals in a URL


def free_port() -> int:
    """A TCP port nobody listens on now (for a one-machine rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
