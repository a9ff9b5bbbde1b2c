"""Who this process is, as its launcher describes it: pure functions of a mapping.

    launch = detect_launch(os.environ)      # tests pass a dict (and a resolver)
    python -m pipeline.dist                 # prints this task's launch as one JSON line

Launchers, in order of precedence:
- torchrun (or any launcher that sets RANK / WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and
  MASTER_ADDR / MASTER_PORT). Without LOCAL_WORLD_SIZE the ranks per node come from
  SLURM's tasks per node when the job is SLURM's and the counts agree, else they are
  unknown (None) and `model.sync_bn: node` is refused rather than silently made global.
- srun (sbatch, salloc, submitit): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID
  and the step's tasks per node. The master is the first host of the step's node list,
  resolved to an address (SLURM's NodeAddr where the name does not resolve), never
  SLURM_LAUNCH_NODE_IPADDR: under salloc that is the login node, where no rank runs. The
  port derives from the job id and SLURM_RESTART_COUNT, so a requeued job (same id) never
  meets the rendezvous store of the incarnation before it. MASTER_ADDR / MASTER_PORT win.
- neither: a single process, with a one-rank process group on a free local port, so the
  training code has one path whatever the world size.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Resolver = Callable[[str], str]  # host name -> address


@dataclass(frozen=True)
class Launch:
    """What the launcher says about this process."""

    launcher: str  # torchrun | slurm | single
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int | None  # ranks on this node; None: the launcher did not say
    node_rank: int  # this node's index in the job (0 for torchrun on one node)
    master_addr: str
    master_port: int
    job_id: str | None = None  # SLURM's, when there is a job
    restart_count: int = 0  # how many times SLURM requeued the job


def detect_launch(environ: Mapping[str, str] = os.environ,
                  resolve: Resolver | None = None) -> Launch:
    """The launch as the environment describes it (pure, given `resolve`)."""
    resolve = resolve or resolve_host
    job = environ.get("SLURM_JOB_ID")
    restarts = int(environ.get("SLURM_RESTART_COUNT", 0))
    if "RANK" in environ and "WORLD_SIZE" in environ:
        world = int(environ["WORLD_SIZE"])
        local = environ.get("LOCAL_WORLD_SIZE")
        return Launch("torchrun", int(environ["RANK"]), world,
                      int(environ.get("LOCAL_RANK", 0)),
                      int(local) if local else _slurm_ranks_per_node(environ, world),
                      int(environ.get("GROUP_RANK", 0)),
                      environ.get("MASTER_ADDR", "127.0.0.1"),
                      int(environ.get("MASTER_PORT", 29500)), job, restarts)
    if "SLURM_PROCID" in environ and "SLURM_NTASKS" in environ:
        node = int(environ.get("SLURM_NODEID", 0))
        per_node = tasks_per_node(environ.get("SLURM_STEP_TASKS_PER_NODE")
                                  or environ.get("SLURM_TASKS_PER_NODE", "1"))
        addr = environ.get("MASTER_ADDR") or resolve(first_host(environ))
        step = int(environ.get("SLURM_STEP_ID", 0)) if environ.get("SLURM_STEP_ID", "").isdigit() \
            else 0
        port = int(environ.get("MASTER_PORT") or slurm_port(int(job or 0), restarts + step))
        return Launch("slurm", int(environ["SLURM_PROCID"]), int(environ["SLURM_NTASKS"]),
                      int(environ.get("SLURM_LOCALID", 0)), per_node[min(node, len(per_node) - 1)],
                      node, addr, port, job, restarts)
    return Launch("single", 0, 1, 0, 1, 0, "127.0.0.1", free_port(), job, restarts)


def slurm_port(job_id: int, restart_count: int) -> int:
    """20 ports per job id, one per incarnation: `restart_count` counts the requeues and
    the job's steps (each srun, so an in-job restart meets no old store); past 20 they
    wrap around."""
    return 20000 + (job_id % 2000) * 20 + restart_count % 20


def first_host(environ: Mapping[str, str]) -> str:
    """The first host of the step's nodes (the job's outside a step)."""
    nodes = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST")
    if not nodes:
        raise ValueError("SLURM_PROCID is set but neither SLURM_STEP_NODELIST nor "
                         "SLURM_JOB_NODELIST is: set MASTER_ADDR to the first node's address")
    return expand_hostlist(nodes)[0]


def expand_hostlist(text: str) -> list[str]:
    """SLURM's compressed host list: 'gpu[01-03,07],login2' -> gpu01 gpu02 gpu03 gpu07 login2."""
    hosts = []
    for prefix, ranges, suffix in re.findall(r"([^,\[\]]*)(?:\[([^\]]*)\])?([^,\[\]]*),?",
                                             text):
        if not (prefix or ranges or suffix):
            continue
        if not ranges:
            hosts.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            for n in range(int(lo), int(hi or lo) + 1):
                hosts.append(f"{prefix}{n:0{len(lo)}d}{suffix}")
    return hosts


def tasks_per_node(text: str) -> list[int]:
    """SLURM's compressed list, e.g. '8(x3),4' -> [8, 8, 8, 4]."""
    counts = []
    for part in text.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise ValueError(f"cannot read SLURM tasks per node {text!r}")
        counts += [int(match[1])] * int(match[2] or 1)
    return counts


def _slurm_ranks_per_node(environ: Mapping[str, str], world: int) -> int | None:
    """Ranks per node for a launcher that did not say, when SLURM's counts match it."""
    counts = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE")
    if not counts:
        return None if world > 1 else 1
    per_node = tasks_per_node(counts)
    if sum(per_node) != world or len(set(per_node)) != 1:
        return None
    return per_node[0]


def resolve_host(name: str) -> str:
    """An address for `name`: DNS / hosts first, then SLURM's NodeAddr (fake or private
    node names that only slurm.conf knows)."""
    try:
        return socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)[0][4][0]
    except OSError:
        pass
    try:
        shown = subprocess.run(["scontrol", "show", "node", name], capture_output=True,
                               text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        shown = ""
    match = re.search(r"\bNodeAddr=(\S+)", shown)
    if match is None:
        raise ValueError(f"node {name!r} (the first of the job) does not resolve and "
                         "`scontrol show node` gives no NodeAddr: set MASTER_ADDR")
    return match[1]


def free_port() -> int:
    """A TCP port nobody listens on now (for a one-machine rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_name() -> str:
    """This machine as SLURM names it (the host name outside SLURM)."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()

