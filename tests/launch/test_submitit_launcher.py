"""python -m pipeline.launch: submitit submits the same training to the local SLURM cluster;
signalled, it saves on every rank, requeues, resumes and returns its result with the
weights of the uninterrupted job-script run. Bad requests end before anything is
submitted."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import pytest
from launch_runs import SMOKE, STEPS, overrides
from run_helpers import REPO, assert_same_tensors, state_at
from slurm_jobs import release_requeued, wait_until

from pipeline.dist.jobstate import job_state
from pipeline.launch.submit import minutes


def launcher(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.launch", *args]


def test_a_signalled_submitit_job_requeues_resumes_and_returns_its_result(
        reference, sample_shards, tmp_path):
    command = launcher("--nodes", "2", "--gpus-per-node", "2", "--cpus-per-task", "1",
                       "--time", "10", "--partition", "local", "--wait", "--config", SMOKE,
                       *overrides(sample_shards, tmp_path, "run"))
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(400, process.kill)  # a hung job fails the test, not the suite
    watchdog.start()
    first = process.stdout.readline()
    job_id = re.fullmatch(r"submitted SLURM job (\d+): 2 nodes x 2 tasks\n", first)[1]
    wait_until(lambda: (tmp_path / "run" / "checkpoints" / "step-00000004").is_dir(),
               "the first checkpoint")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    release_requeued(job_id)
    out = first + process.stdout.read()  # the same reader: nothing buffered is lost
    process.wait(timeout=60)
    watchdog.cancel()

    assert process.returncode == 0, out
    assert f"run folder: {tmp_path / 'run'}" in out
    assert re.search(rf"job {job_id}: RUNNING, restarts 1", out)
    result = re.search(rf"job {job_id}: (\{{.*\}})", out)[1]
    assert f"'run_dir': '{tmp_path / 'run'}'" in result and f"'step': {STEPS}" in result
    rank0 = (tmp_path / "run" / "logs" / "rank-00000.log").read_text()
    assert "stopping at step" in rank0 and "requeued SLURM job" in rank0  # ours, collective
    assert job_state(job_id)[1] == 1
    assert_same_tensors(state_at(tmp_path / "run", STEPS), state_at(reference.run_dir, STEPS))


@pytest.mark.parametrize("args, message", [
    (("--config", "configs/nope.yaml"), "config configs/nope.yaml not found"),
    (("--gpus-per-node", "2", "--tasks-per-node", "4", "--config", SMOKE),
     "--tasks-per-node 4 exceeds --gpus-per-node 2"),
    (("--partition", "nope", "--config", SMOKE, "data.shards=/x"),
     "partition 'nope' does not exist"),
    (("--config", SMOKE, "optim.base_lrr=1"), "config error: .*base_lrr"),
    (("--time", "UNLIMITED", "--config", SMOKE), "--time UNLIMITED: give the job a time limit"),
    (("--time", "1:2:3:4", "--config", SMOKE), "--time 1:2:3:4: expected minutes, M:S"),
])
def test_bad_requests_are_refused_before_submission(slurm_cluster, args, message):
    done = subprocess.run(launcher(*args), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and re.search(message, done.stderr), done.stderr
    assert "submitted" not in done.stdout


@pytest.mark.parametrize("text, expected", [
    ("90", 90), ("1:30", 2), ("2:00:00", 120), ("1-0", 1440), ("1-2", 1560),
    ("1-2:30", 1590), ("1-2:30:10", 1591), (" 45 ", 45),
])
def test_every_time_form_of_sbatch_reads_as_minutes(text, expected):
    assert minutes(text) == expected
