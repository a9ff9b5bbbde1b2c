"""What SLURM says of a job: its state and restarts, from scontrol.

    state, restarts = job_state("1234")     # ("RUNNING", 0); (None, 0) once forgotten
    state in TERMINAL                       # it has ended
    ended_early("1234")                     # SLURM ends it before its limit: scancel
"""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timedelta

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED")


def job_state(job_id: str) -> tuple[str | None, int]:
    """(JobState, Restarts) from scontrol; (None, 0) once SLURM has forgotten the job.
    OSError when SLURM cannot say (no scontrol, no controller to answer)."""
    shown = _show(job_id)
    state, restarts = re.search(r"JobState=(\S+)", shown), re.search(r"Restarts=(\d+)", shown)
    return (state[1] if state else None), int(restarts[1]) if restarts else 0


def ended_early(job_id: str) -> bool:
    """SLURM is already ending the job (COMPLETING, CANCELLED) well before its time limit:
    a scancel (or an administrator's), not a time limit and not a warning signal, which
    come while it runs. OSError when SLURM cannot say."""
    shown = _show(job_id)
    state = re.search(r"JobState=(\S+)", shown)
    if state is None or state[1] not in ("COMPLETING", "CANCELLED"):
        return False
    fields = dict(re.findall(r"(StartTime|EndTime|TimeLimit)=(\S+)", shown))
    limit = _duration(fields.get("TimeLimit", "UNLIMITED"))
    try:
        start, end = (datetime.fromisoformat(fields[k]) for k in ("StartTime", "EndTime"))
    except (KeyError, ValueError):
        return True
    return limit is None or end < start + limit - timedelta(minutes=1)


def _duration(text: str) -> timedelta | None:
    """scontrol's [D-]HH:MM:SS (or MM:SS); None for UNLIMITED."""
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    if not all(p.isdigit() for p in parts) or (days and not days.isdigit()):
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return timedelta(days=int(days or 0), seconds=seconds)


def _show(job_id: str) -> str:
    done = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        raise OSError(f"scontrol show job {job_id}: {done.stderr.strip() or done.returncode}")
    return done.stdout
