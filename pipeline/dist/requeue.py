"""After a preemption save: rank 0 asks SLURM to requeue the job, every rank hears the answer.

    requeued = requeue_job(env, cfg.dist.max_requeues)   # collective; then exit 75

The job comes back with the same id (and so the same run name and folder) and resumes
from the checkpoint just written. Rank 0 decides before any rank exits, so that srun's
--kill-on-bad-exit cannot end rank 0 in the middle of `scontrol requeue`.

`scancel` sends the same SIGTERM as a preemption, but SLURM is already ending the job when
it arrives (COMPLETING, well before its time limit): such a job saves (if KillWait leaves
it time), says it was cancelled, and is never requeued.
"""

from __future__ import annotations

import logging
import subprocess

import torch.distributed as dist

from pipeline.dist.environment import Launch
from pipeline.dist.group import DistEnv
from pipeline.dist.jobstate import ended_early

log = logging.getLogger(__name__)


def why_not_requeue(launch: Launch, max_requeues: int) -> str | None:
    """None when this job may be requeued once more, else the reason it may not."""
    if launch.job_id is None:
        return "not a SLURM job: start the same command again to resume"
    if _cancelled(launch.job_id):
        return (f"SLURM job {launch.job_id} was cancelled (scancel), not preempted: the "
                "checkpoint above holds every step so far; submit it again with the same "
                "name= to resume")
    if launch.restart_count >= max_requeues:
        return (f"SLURM job {launch.job_id} was requeued {launch.restart_count} times, "
                f"dist.max_requeues = {max_requeues}: submit it again with the same name= "
                "to resume")
    return None


def requeue_job(env: DistEnv, max_requeues: int) -> bool:
    """Collective: True on every rank when rank 0 requeued the job."""
    answer = [False]
    if env.is_main:
        answer[0] = _requeue(env.launch, max_requeues)
    if dist.is_initialized():
        dist.broadcast_object_list(answer, src=0)
    return answer[0]


def _requeue(launch: Launch, max_requeues: int) -> bool:
    reason = why_not_requeue(launch, max_requeues)
    if reason is not None:
        log.warning("not requeued: %s", reason)
        return False
    try:
        done = subprocess.run(["scontrol", "requeue", launch.job_id], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        done = subprocess.CompletedProcess([], 1, "", str(err))
    if done.returncode != 0:
        log.error("scontrol requeue %s failed (%s): submit the job again with the same "
                  "name= to resume", launch.job_id, done.stderr.strip())
        return False
    log.warning("requeued SLURM job %s (requeue %d of at most %d): it resumes from the "
                "checkpoint just saved", launch.job_id, launch.restart_count + 1, max_requeues)
    return True


def _cancelled(job_id: str) -> bool:
    try:
        return ended_early(job_id)
    except (OSError, subprocess.SubprocessError):  # SLURM cannot say: requeue as asked
        return False
