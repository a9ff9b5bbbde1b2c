"""One live writer per run folder: runs/<name>/lock.json names the process that holds it.

    with hold_run(cfg.run_dir, env):        # collective; RunLocked on every rank if taken
        Trainer(cfg, env, signals, watchdog).fit()

A second start of a live run would delete its in-progress checkpoint and append to its
logs. Rank 0 creates the lock file exclusively and removes it at the end. A lock whose
holder is gone is taken over with a warning: a process of this host that no longer runs
(pid and start time, so a reused pid is not mistaken for it), the same SLURM job (a
requeue: SLURM runs one incarnation at a time), or a SLURM job that has ended. A holder
on another host that SLURM cannot vouch for is refused, with the file to delete.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.dist.group import DistEnv, rank0_checks
from pipeline.dist.jobstate import TERMINAL, job_state

log = logging.getLogger(__name__)
LOCK = "lock.json"


class RunLocked(RuntimeError):
    pass


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    pid_start: str | None  # /proc/PID/stat's start time: a reused pid has another
    job_id: str | None
    restart: int  # SLURM_RESTART_COUNT: a requeued job's earlier incarnation has less
    since: str

    @classmethod
    def this_process(cls, job_id: str | None, restart: int = 0) -> Holder:
        return cls(socket.gethostname(), os.getpid(), process_start(os.getpid()), job_id,
                   restart, time.strftime("%Y-%m-%d %H:%M:%S %Z"))

    def describe(self) -> str:
        job = f", SLURM job {self.job_id}" if self.job_id else ""
        return f"pid {self.pid} on {self.host}{job}, since {self.since}"


@contextmanager
def hold_run(run_dir: Path, env: DistEnv) -> Iterator[None]:
    """Collective: the run folder is this job's until the block ends."""
    me = Holder.this_process(env.launch.job_id, env.launch.restart_count)
    rank0_checks(env, lambda: take(run_dir, me), RunLocked)
    try:
        yield
    finally:
        if env.is_main:
            release(run_dir, me)


def take(run_dir: Path, me: Holder) -> None:
    path = run_dir / LOCK
    run_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a stale lock removed, then a race with another starter
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_holder(path)
            reason = stale_reason(holder, me)
            if reason is None:
                raise RunLocked(
                    f"{run_dir} is in use by {holder.describe()}: two writers would destroy "
                    f"each other's checkpoints. Wait for it, stop it, or start this one with "
                    f"another name=; if that process is gone, delete {path}") from None
            log.warning("taking over the lock of %s: %s", run_dir, reason)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(me), f)
        return
    raise RunLocked(f"{path} keeps being taken by another start of this run")


def release(run_dir: Path, me: Holder) -> None:
    path = run_dir / LOCK
    if read_holder(path) == me:  # never another start's lock
        path.unlink(missing_ok=True)


def read_holder(path: Path) -> Holder | None:
    """None when the file is gone or unreadable (a crash between create and write)."""
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def stale_reason(holder: Holder | None, me: Holder) -> str | None:
    """Why the holder can no longer be writing, or None when it may be."""
    if holder is None:
        return "the lock file is unreadable"
    if holder.job_id is not None and holder.job_id == me.job_id and \
            holder.restart < me.restart:
        return f"it was this SLURM job's run before its requeue ({holder.describe()})"
    if holder.host == me.host:
        if holder.pid == me.pid and holder.pid_start == me.pid_start:
            return "this process held it and did not let go (an earlier run in it)"
        return None if still_runs(holder) else f"{holder.describe()} no longer runs"
    if holder.job_id is not None and slurm_job_ended(holder.job_id):
        return f"SLURM job {holder.job_id} has ended ({holder.describe()})"
    return None


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if it does not run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name may hold spaces


def still_runs(holder: Holder) -> bool:
    """Whether the holder's process (of this host) runs; by its start time where /proc
    tells it, else by its pid alone."""
    if holder.pid_start is not None and Path("/proc/self/stat").exists():
        return process_start(holder.pid) == holder.pid_start
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def slurm_job_ended(job_id: str) -> bool:
    try:
        state, _ = job_state(job_id)
    except (OSError, subprocess.SubprocessError):  # no scontrol: SLURM cannot vouch for it
        return False
    return state is None or state in TERMINAL
