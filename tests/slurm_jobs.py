"""Real jobs on the local SLURM cluster: submit with sbatch --wait, watch, release requeues.

    job = sbatch(script, ["--nodes=2", ...], ["configs/smoke_cpu.yaml", "name=x"], log)
    release_requeued(job.job_id)      # a requeued job starts now, not in two minutes
    assert job.wait() == 0
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from run_helpers import REPO

from pipeline.launch.submit import job_state

JOB_SCRIPT = REPO / "slurm" / "train_64gpu.sh"
# The job script's own #SBATCH lines ask for 8 nodes of 8 GPUs, 12 CPUs per task and a
# day: more than the local cluster's partition gives (8 CPUs per node, 4 h).
SMALL = ["--nodes=2", "--ntasks-per-node=2", "--gpus-per-node=2", "--cpus-per-task=1",
         "--time=00:10:00"]


@dataclass
class BatchJob:
    process: subprocess.Popen
    job_id: str
    log: Path

    def wait(self, timeout: float = 300) -> int:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            subprocess.run(["scancel", self.job_id])
            raise AssertionError(f"job {self.job_id} ran past {timeout}s:\n"
                                 f"{self.text()}") from None
        return self.process.returncode

    def text(self) -> str:
        return self.log.read_text() if self.log.is_file() else "(no log)"


def sbatch(script: Path, options: list[str], args: list[str], log: Path,
           env: dict[str, str] | None = None) -> BatchJob:
    """sbatch --wait in the background; its exit status is the job's."""
    environment = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    process = subprocess.Popen(["sbatch", "--wait", "--parsable", f"--output={log}", *options,
                                str(script), *args], cwd=REPO, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job_id = process.stdout.readline().strip().split(";")[0]
    if not job_id:
        process.wait()
        raise AssertionError(f"sbatch refused the job: {process.stderr.read()}")
    return BatchJob(process, job_id, log)


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
