"""slurm/train_64gpu.sh, unmodified, on the local SLURM cluster: it trains with command-line
overrides, survives a preemption signal by saving, requeueing and resuming to the same
weights, obeys its own time limit's signal and the requeue cap, lays out the full 8 x 8
job, and refuses bad requests before any training."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from launch_runs import SMOKE, STEPS, overrides
from run_helpers import REPO, assert_same_tensors, checkpoints, state_at
from slurm_jobs import JOB_SCRIPT, SMALL, TIME, BatchJob, release_requeued, sbatch, wait_until

from pipeline.dist.jobstate import job_state
from pipeline.training.outcome import REQUEUE_EXIT_CODE


def test_the_job_script_trains_checkpoints_and_exits_0(reference):
    assert reference.status == 0, reference.log
    assert checkpoints(reference.run_dir) == [4, 8, STEPS]
    derived = json.loads((reference.run_dir / "derived.json").read_text())
    assert (derived["world_size"], derived["global_batch"], derived["bn_group"]) == (4, 16, 4)
    assert "slurm launch, rank 0 of 4, local rank 0" in reference.log
    assert re.search(r"SLURM job \d+, restart 0; master 127\.0\.0\.1:\d+", reference.log)
    # The first rank of each node staged the shards (the two fake nodes share a disk: the
    # first copied all 9, the second found them verified); the others read the copy.
    logs = {rank: (reference.run_dir / "logs" / f"rank-{rank:05d}.log").read_text()
            for rank in range(4)}
    staged = {rank: re.findall(r"staged \S+ to \S+: (\d+) shards copied .*, (\d+) kept", log)
              for rank, log in logs.items()}
    assert sorted(map(tuple, staged[0] + staged[2])) == [("0", "9"), ("9", "0")]
    assert staged[1] == staged[3] == []


def test_a_preempted_job_saves_requeues_itself_and_resumes_to_the_same_weights(
        reference, sample_shards, tmp_path):
    job = sbatch(JOB_SCRIPT, SMALL, [SMOKE, *overrides(sample_shards, tmp_path, "run")],
                 tmp_path / "job.out")
    wait_until(lambda: (tmp_path / "run" / "checkpoints" / "step-00000004").is_dir(),
               "the first checkpoint")
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
    release_requeued(job.job_id)
    assert job.wait() == 0, job.text()

    log = job.text()
    stops = re.findall(r"rank(\d) WARNING pipeline.train: stopping at step (\d+): SIGUSR2", log)
    assert sorted(rank for rank, _ in stops) == ["0", "1", "2", "3"]  # every rank saved
    stopped_at = {int(step) for _, step in stops}
    assert len(stopped_at) == 1 and 4 <= min(stopped_at) < STEPS  # at one step, mid-run
    assert log.count(f"requeued SLURM job {job.job_id} (requeue 1 of at most 100)") == 1
    assert f"job {job.job_id} restart 1 on 2 nodes" in log  # the same id came back
    assert f"at step {min(stopped_at)}" in log.split("restart 1 on 2 nodes")[1]
    assert job_state(job.job_id) == ("COMPLETED", 1)
    assert_same_tensors(state_at(tmp_path / "run", STEPS), state_at(reference.run_dir, STEPS))


def test_the_time_limit_signal_saves_and_the_requeue_cap_holds(slurm_cluster, sample_shards,
                                                                tmp_path):
    """--time=1 with USR2 40 s ahead: SLURM's own warning stops the run; with
    dist.max_requeues=0 it saves, is not requeued, and exits 75."""
    args = [SMOKE, f"data.shards={sample_shards}", f"runs_dir={tmp_path}", "name=run",
            "data.image_size=32", "schedule.epochs=50", "eval.every_epochs=0",
            "dist.max_requeues=0"]
    job = sbatch(JOB_SCRIPT, ["--nodes=1", "--ntasks-per-node=1", "--gpus-per-node=1",
                              "--cpus-per-task=1", "--time=1", "--signal=USR2@40"], args,
                 tmp_path / "job.out")
    assert job.wait(timeout=180) == REQUEUE_EXIT_CODE, job.text()
    log = job.text()
    stopped = int(re.search(r"stopping at step (\d+): SIGUSR2", log)[1])
    assert checkpoints(tmp_path / "run")[-1] == stopped  # saved where it stopped
    assert f"not requeued: SLURM job {job.job_id} was requeued 0 times, " \
           "dist.max_requeues = 0" in log
    assert job_state(job.job_id)[0] == "FAILED"


def test_the_full_64_task_shape_as_a_dry_run(slurm_cluster, tmp_path):
    """8 nodes x 8 tasks report who they are; every task sees its node's 8 GPUs."""
    job = sbatch(JOB_SCRIPT, ["--cpus-per-task=1", TIME], [], tmp_path / "job.out",
                 env={"DRY_RUN": "1"})
    assert job.wait(timeout=120) == 0, job.text()
    tasks = sorted((json.loads(line) for line in job.text().splitlines()
                    if line.startswith("{")), key=lambda t: t["rank"])
    assert [t["rank"] for t in tasks] == list(range(64))
    assert {(t["world_size"], t["local_world_size"]) for t in tasks} == {(64, 8)}
    assert [(t["node"], t["node_rank"], t["local_rank"]) for t in tasks] == [
        (f"node{n + 1}", n, g) for n in range(8) for g in range(8)]
    assert len({(t["master_addr"], t["master_port"]) for t in tasks}) == 1
    assert {t["job_id"] for t in tasks} == {job.job_id}
    assert {t["visible_gpus"] for t in tasks} == {"0,1,2,3,4,5,6,7"}


def test_bad_requests_end_before_any_training(slurm_cluster, sample_shards, tmp_path):
    missing = sbatch(JOB_SCRIPT, SMALL, ["configs/nope.yaml"], tmp_path / "missing.out")
    assert missing.wait(timeout=60) == 2
    assert "config configs/nope.yaml not found" in missing.text()

    crowded = sbatch(JOB_SCRIPT, ["--nodes=1", "--ntasks-per-node=4", "--gpus-per-node=2",
                                  "--cpus-per-task=1", TIME], [SMOKE],
                     tmp_path / "crowded.out")
    assert crowded.wait(timeout=60) == 2
    assert "4 tasks per node but 2 GPUs per node" in crowded.text()

    refused = subprocess.run(["sbatch", "--partition=nope", *SMALL, str(JOB_SCRIPT)],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "invalid partition" in refused.stderr.lower()


def test_submitted_from_another_folder_it_runs_and_logs_in_the_repository(slurm_cluster,
                                                                          tmp_path):
    """sbatch from a home or experiment folder: SLURM's output opens in that folder, and the
    script moves its log to the repository's slurm/logs (once it failed with no log)."""
    done = subprocess.run(["sbatch", "--parsable", *SMALL, str(JOB_SCRIPT)], cwd=tmp_path,
                          env={**os.environ, "PYTHON": sys.executable, "DRY_RUN": "1"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().split(";")[0]
    log = REPO / "slurm" / "logs" / f"bn-inception-{job_id}.out"
    try:
        job = BatchJob(job_id, log)
        assert job.wait(timeout=120) == 0, job.text()
        tasks = [json.loads(line) for line in job.text().splitlines() if line.startswith("{")]
        assert sorted(t["rank"] for t in tasks) == [0, 1, 2, 3]
        assert f"train_64gpu.sh: job {job_id} restart 0" in job.text()
        assert not list(tmp_path.iterdir())  # the empty default output is gone
    finally:
        log.unlink(missing_ok=True)


def test_scancel_is_not_a_preemption(slurm_cluster, sample_shards, tmp_path):
    """The same SIGTERM, but the job is CANCELLED: it saves, says so, and is not requeued
    (rank 0 once tried `scontrol requeue` on it, which fails)."""
    args = [SMOKE, *overrides(sample_shards, tmp_path, "run"), "schedule.epochs=40"]
    job = sbatch(JOB_SCRIPT, SMALL, args, tmp_path / "job.out")
    wait_until(lambda: (tmp_path / "run" / "checkpoints" / "step-00000004").is_dir(),
               "the first checkpoint")
    subprocess.run(["scancel", job.job_id], check=True)
    wait_until(lambda: job_state(job.job_id)[0] in ("CANCELLED", None), "the cancel", 60)
    log = job.text()
    assert f"not requeued: SLURM job {job.job_id} was cancelled (scancel), not preempted" in log
    assert "scontrol requeue" not in log and "requeued SLURM job" not in log
    stopped = int(re.search(r"stopping at step (\d+): SIGTERM", log)[1])
    assert checkpoints(tmp_path / "run")[-1] == stopped > 4  # saved where it stopped
    assert job_state(job.job_id)[1] == 0  # never requeued
