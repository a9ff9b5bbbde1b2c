"""What SLURM says of a job: its state and restarts, from scontrol.

    state, restarts = job_state("1234")     # ("RUNNING", 0); (None, 0) once forgotten
    state in TERMINAL                       # it has ended
"""

from __future__ import annotations

import re
import subprocess

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED")


def job_state(job_id: str) -> tuple[str | None, int]:
    """(JobState, Restarts) from scontrol; (None, 0) once SLURM has forgotten the job.
    OSError when SLURM cannot say (no scontrol, no controller to answer)."""
    done = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        raise OSError(f"scontrol show job {job_id}: {done.stderr.strip() or done.returncode}")
    shown = done.stdout
    state, restarts = re.search(r"JobState=(\S+)", shown), re.search(r"Restarts=(\d+)", shown)
    return (state[1] if state else None), int(restarts[1]) if restarts else 0
