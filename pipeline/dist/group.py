"""The process group and the device, built once from the launch and passed down.

    env = init_distributed(cfg.dist)     # process group up, device chosen
    if env.is_main: ...                  # rank-0-only actions ask it
    shutdown(env)

A rank uses GPU `local_rank`, or GPU 0 when the launcher shows it exactly one
(CUDA_VISIBLE_DEVICES narrowed per task, as `srun --gpus-per-task=1` does).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist

from pipeline.config import DistConfig
from pipeline.dist.environment import Launch, detect_launch

WAIT_NOTICE_S = 30  # a rendezvous this slow is worth a word: who waits, where, how long


class RendezvousError(RuntimeError):
    """The ranks did not find each other; the message says where they were to meet."""


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
    def ranks_per_node(self) -> int | None:
        """None when the launcher did not say (RANK without LOCAL_WORLD_SIZE)."""
        return self.launch.local_world_size

    @property
    def is_main(self) -> bool:
        return self.launch.rank == 0


def pick_device(cfg: DistConfig, launch: Launch, visible: int | None = None) -> torch.device:
    """The rank's device; `visible` (the CUDA devices this process sees) is for tests."""
    visible = torch.cuda.device_count() if visible is None else visible
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and visible > 0)
    if not use_cuda:
        return torch.device("cpu")
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


def device_name(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3 80 GiB (cuda:3)', or 'cpu'."""
    if device.type != "cuda":
        return "cpu"
    props = torch.cuda.get_device_properties(device)
    return f"{props.name} {props.total_memory / 2**30:.0f} GiB (cuda:{device.index})"


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
    where = f"{_host(launch.master_addr)}:{launch.master_port}"
    waiting = _say_later(
        min(WAIT_NOTICE_S, cfg.timeout_s / 4),
        f"rank {launch.rank} of {launch.world_size} is still waiting at {where} for the "
        f"other ranks to join (WORLD_SIZE={launch.world_size}); it gives up after "
        f"dist.timeout_s={cfg.timeout_s} s")
    try:
        dist.init_process_group(
            backend, init_method=f"tcp://{where}", rank=launch.rank,
            world_size=launch.world_size, timeout=timedelta(seconds=cfg.timeout_s),
            device_id=device if device.type == "cuda" else None)
    except dist.DistError as err:
        raise RendezvousError(
            f"rank {launch.rank} of {launch.world_size}: the process group at {where} did not "
            f"form within {cfg.timeout_s} s ({str(err).strip().splitlines()[0]}): start all "
            f"{launch.world_size} processes with the same MASTER_ADDR and MASTER_PORT, or "
            "check that the port is reachable from every node") from None
    finally:
        waiting.cancel()
    return DistEnv(launch, device, backend)


def _say_later(delay_s: float, message: str) -> threading.Timer:
    """A warning printed unless cancelled within delay_s (logging may not be set up yet)."""
    timer = threading.Timer(delay_s, lambda: print(message, file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    return timer


def rank0_checks(env: DistEnv, check: Callable[[], None],
                 errors: type[Exception] | tuple[type[Exception], ...]) -> None:
    """Collective: rank 0 runs `check`; an error of `errors` it raises is raised on every
    rank, same kind and message, so that no rank goes on to wait for one that stopped."""
    problem = [None]
    if env.is_main:
        try:
            check()
        except errors as err:
            problem[0] = (type(err), str(err))
    if dist.is_initialized():
        dist.broadcast_object_list(problem, src=0)
    if problem[0] is not None:
        kind, message = problem[0]
        raise kind(message)


def shutdown(env: DistEnv) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _from_group(launch: Launch) -> Launch:
    rank, world = dist.get_rank(), dist.get_world_size()
    local_world = launch.local_world_size if launch.world_size == world else world
    local_world = local_world or world
    return replace(launch, rank=rank, world_size=world, local_rank=rank % local_world,
                   local_world_size=local_world, node_rank=rank // local_world)


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr  # IPv6 literals in a URL
