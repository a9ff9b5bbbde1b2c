"""slurm/train_64gpu.sh on the local cluster when a rank crashes: the step runs again in the
same allocation and the job completes with the weights of an undisturbed run; what another
start cannot fix ends the job at once; the restarts are capped."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

from launch_runs import SMOKE, STEPS, overrides
from run_helpers import assert_same_tensors, state_at
from slurm_jobs import JOB_SCRIPT, SMALL, sbatch, wait_until

from pipeline.dist.jobstate import job_state
from pipeline.training.outcome import CRASH_EXIT_CODE


def rank_processes(marker: str) -> list[int]:
    """The pids of the training processes (not srun) whose command line holds `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if len(words) > 2 and words[1:3] == ["-m", "pipeline.train"] and \
                any(marker in w for w in words) and "srun" not in words[0]:
            found.append(int(proc.name))
    return found


def test_a_killed_rank_costs_a_restart_not_the_job(reference, sample_shards, tmp_path):
    job = sbatch(JOB_SCRIPT, SMALL, [SMOKE, *overrides(sample_shards, tmp_path, "run")],
                 tmp_path / "job.out", env={"RESTART_PAUSE_S": "1"})
    wait_until(lambda: (tmp_path / "run" / "checkpoints" / "step-00000004").is_dir(),
               "the first checkpoint")
    ranks = rank_processes(f"runs_dir={tmp_path}")
    assert len(ranks) == 4, ranks
    os.kill(ranks[1], signal.SIGKILL)
    assert job.wait() == 0, job.text()
    log = job.text()
    assert "the step crashed (status" in log and "restart 1 of 3 in 1s" in log
    assert job_state(job.job_id) == ("COMPLETED", 0)  # recovered inside the allocation
    assert_same_tensors(state_at(tmp_path / "run", STEPS), state_at(reference.run_dir, STEPS))


FAILING_PYTHON = """#!{python}
# The trainer, whose every start fails at its first step with an unexpected error.
import runpy, sys
from pipeline.training import trainer
def failing(step, *args):
    raise RuntimeError("injected: this rank fails at every start")
trainer.lr_at = failing
sys.argv = ["pipeline.train", *sys.argv[3:]]  # after: -m pipeline.train
runpy.run_module("pipeline.train", run_name="__main__")
"""


def test_restarts_are_capped_and_the_users_errors_are_not_retried(slurm_cluster,
                                                                  sample_shards, tmp_path):
    python = tmp_path / "failing_python"
    python.write_text(FAILING_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    args = [SMOKE, *overrides(sample_shards, tmp_path, "run")]
    capped = sbatch(JOB_SCRIPT, SMALL, args, tmp_path / "capped.out",
                    env={"PYTHON": str(python), "MAX_RESTARTS": "1", "RESTART_PAUSE_S": "1"})
    status = capped.wait()
    log = capped.text()
    # srun's status: 70 (the ranks' crash) or 143 (the ranks it stopped with SIGTERM)
    assert status in (CRASH_EXIT_CODE, 143), log
    assert log.count("restart 1 of 1") == 1, log
    assert re.search(r"giving up: the step crashed \(status (70|143)\) after 1 restarts in "
                     r"this job \(MAX_RESTARTS=1\)", log)
    assert log.count("injected: this rank fails at every start") >= 2  # two starts
    assert job_state(capped.job_id)[0] == "FAILED"

    missing = sbatch(JOB_SCRIPT, SMALL, [SMOKE, *overrides(tmp_path / "nothing", tmp_path,
                                                           "other")],
                     tmp_path / "missing.out", env={"RESTART_PAUSE_S": "1"})
    assert missing.wait(timeout=90) == 1, missing.text()
    assert "ShardError" in missing.text() and "restart 1" not in missing.text()
