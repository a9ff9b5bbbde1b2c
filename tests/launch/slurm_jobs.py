"""Real jobs on the local SLURM cluster: submit with sbatch, wait for the end, release requeues.

    job = sbatch(script, ["--nodes=2", ...], ["configs/smoke_cpu.yaml", "name=x"], log)
    release_requeued(job.job_id)      # a requeued job starts now, not in two minutes
    assert job.wait() == 0
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from run_helpers import REPO

from pipeline.dist.jobstate import TERMINAL, job_state

JOB_SCRIPT = REPO / "slurm" / "train_64gpu.sh"
# The job script's own #SBATCH lines ask for 8 nodes of 8 GPUs, 12 CPUs per task and a
# day: more than the local cluster's partition gives (8 CPUs per node, 4 h). Its
# --signal=USR2@300 comes 5-6 min before the limit, so a shorter --time stops a job at once.
TIME = "--time=00:30:00"
SMALL = ["--nodes=2", "--ntasks-per-node=2", "--gpus-per-node=2", "--cpus-per-task=1", TIME]


@dataclass
class BatchJob:
    job_id: str
    log: Path

    def wait(self, timeout: float = 300) -> int:
        """The job's exit status once it has ended, polled twice a second (sbatch --wait
        polls up to 10 s apart, which adds up over a test session)."""
        try:
            wait_until(lambda: job_state(self.job_id)[0] in TERMINAL, f"job {self.job_id}",
                       timeout)
        except AssertionError:
            subprocess.run(["scancel", self.job_id])
            raise AssertionError(f"job {self.job_id} ran past {timeout}s:\n"
                                 f"{self.text()}") from None
        shown = subprocess.run(["scontrol", "show", "job", "-o", self.job_id],
                               capture_output=True, text=True).stdout
        status, signal = (int(v) for v in re.search(r"\bExitCode=(\d+):(\d+)", shown).groups())
        return -signal if signal else status

    def text(self) -> str:
        return self.log.read_text() if self.log.is_file() else "(no log)"


def sbatch(script: Path, options: list[str], args: list[str], log: Path,
           env: dict[str, str] | None = None) -> BatchJob:
    """Submits the job; BatchJob.wait() gives its exit status."""
    environment = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    done = subprocess.run(["sbatch", "--parsable", f"--output={log}", *options, str(script),
                           *args], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"sbatch refused the job: {done.stderr}")
    return BatchJob(done.stdout.strip().split(";")[0], log)


def wait_until(condition, what: str, timeout: float = 240, poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(poll)


def release_requeued(job_id: str, restarts: int = 1) -> None:
    """Waits for the job's requeue, then lets it start at once: SLURM holds a requeued job
    for about two minutes (its begin time), which is only a wait in a test."""
    wait_until(lambda: job_state(job_id) == ("PENDING", restarts), f"requeue of job {job_id}")
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
