"""slurm/train_64gpu.sh on the local cluster when a rank crashes: the step runs again in the
same allocation and the job completes with the weights of an undisturbed run; what another
start cannot fix ends the job at once; the restarts are capped."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

from launch_runs import SMOKE, STEPS, overrides
from run_helpers import assert_same_tensors, state_at
from slurm_jobs import JOB_SCRIPT, SMALL, sbatch, wait_until

from pipeline.dist.jobstate import job_state
from pipeline.dist.recovery import read_failures
from pipeline.report import main as run_report
from pipeline.training.outcome import CRASH_EXIT_CODE


def rank_processes(marker: str) -> dict[int, int]:
    """rank -> pid of the training processes (not srun) whose command line holds `marker`."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if len(words) > 2 and words[1:3] == ["-m", "pipeline.train"] and \
                any(marker in w for w in words) and "srun" not in words[0]:
            rank = next(v for v in environ if v.startswith(b"SLURM_PROCID="))
            found[int(rank.split(b"=")[1])] = int(proc.name)
    return found


def test_a_killed_rank_then_a_frozen_one_cost_restarts_not_the_job(reference, sample_shards,
                                                                   tmp_path):
    # a frozen rank's peers wait for it in a collective for dist.timeout_s
    args = [SMOKE, *overrides(sample_shards, tmp_path, "run"), "dist.timeout_s=20",
            "dist.restart_pause_s=1"]
    job = sbatch(JOB_SCRIPT, SMALL, args, tmp_path / "job.out")
    wait_until(lambda: (tmp_path / "run" / "checkpoints" / "step-00000004").is_dir(),
               "the first checkpoint")
    ranks = rank_processes(f"runs_dir={tmp_path}")
    assert len(ranks) == 4, ranks
    os.kill(ranks[1], signal.SIGKILL)
    wait_until(lambda: "resumed from" in job.text(), "the resume after the restart")
    again = rank_processes(f"runs_dir={tmp_path}")
    assert len(again) == 4 and not set(again.values()) & set(ranks.values()), (ranks, again)
    os.kill(again[2], signal.SIGSTOP)  # rank 2, on the other node
    assert job.wait() == 0, job.text()
    log = job.text()
    assert "restart 1 of 3 in 1s" in log and "restart 2 of 3 in 2s" in log, log
    # each restart's first start raises the alert (W&B's, here its log line)
    assert log.count("ALERT rank failure: job") >= 1, log
    assert job_state(job.job_id) == ("COMPLETED", 0)  # recovered inside the allocation
    assert_same_tensors(state_at(tmp_path / "run", STEPS), state_at(reference.run_dir, STEPS))

    killed, frozen = read_failures(tmp_path / "run")
    assert killed["job"] == frozen["job"] == job.job_id
    assert [(c["rank"], c["host"]) for c in killed["culprits"]] == [(1, "node1")]
    assert killed["culprits"][0]["what"].startswith("died without a word")
    assert [(c["rank"], c["host"]) for c in frozen["culprits"]] == [(2, "node2")]
    assert frozen["culprits"][0]["what"].startswith("stood still for")
    assert (killed["action"], frozen["action"], killed["ranks"], frozen["ranks"]) == (
        "restart", "restart", 4, 4)
    assert run_report([str(tmp_path / "run"), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "summary.md").read_text()
    assert "## Failures" in table, table
    rows = [line for line in table.splitlines() if line.startswith("| run | 20")]
    # the time lost, at the last one at least (a restart frozen before its first start
    # counts the first failure's loss at the second)
    assert len(rows) == 2 and rows[-1].endswith("s |"), table
    assert "| 4 | rank 1 on node1: died without a word" in rows[0], table
    assert "rank 2 on node2: stood still for" in rows[1], table


FAILING_PYTHON = """#!{python}
# The trainer, whose every start fails at its first step with an unexpected error (on
# every node, or on FAILING_NODE's ranks only); other modules run as they are.
import os, runpy, sys
if sys.argv[1:3] != ["-m", "pipeline.train"]:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
from pipeline.training import trainer
def failing(step, *args):
    raise RuntimeError("injected: this rank fails at every start")
if os.environ.get("FAILING_NODE", os.environ["SLURMD_NODENAME"]) == os.environ["SLURMD_NODENAME"]:
    trainer.lr_at = failing
sys.argv = ["pipeline.train", *sys.argv[3:]]  # after: -m pipeline.train
runpy.run_module("pipeline.train", run_name="__main__")
"""


def test_restarts_are_capped_and_the_users_errors_are_not_retried(slurm_cluster,
                                                                  sample_shards, tmp_path):
    python = tmp_path / "failing_python"
    python.write_text(FAILING_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    args = [SMOKE, *overrides(sample_shards, tmp_path, "run"), "dist.max_restarts=1",
            "dist.restart_pause_s=1"]
    capped = sbatch(JOB_SCRIPT, SMALL, args, tmp_path / "capped.out", env={"PYTHON": str(python)})
    status = capped.wait()
    log = capped.text()
    # srun's status: 70 (the ranks' crash) or 143 (the ranks it stopped with SIGTERM)
    assert status in (CRASH_EXIT_CODE, 143), log
    assert log.count("train_64gpu.sh: the step crashed") == 1, log  # one restart
    assert "restart 1 of 1 in 1s" in log
    assert re.search(r"giving up: the step crashed \(status (70|143); rank \d on node\d "
                     r"failed: RuntimeError: injected: this rank fails at every start and 3 "
                     r"more\) after 1 restarts in this job \(dist.max_restarts=1\)", log), log
    assert [f["action"] for f in read_failures(tmp_path / "run")] == ["restart", "stop"]
    assert log.count("injected: this rank fails at every start") >= 2  # two starts
    assert job_state(capped.job_id)[0] == "FAILED"

    missing = sbatch(JOB_SCRIPT, SMALL, [SMOKE, *overrides(tmp_path / "nothing", tmp_path,
                                                           "other")],
                     tmp_path / "missing.out")
    assert missing.wait(timeout=60) == 1, missing.text()
    assert "ShardError" in missing.text() and "restart 1" not in missing.text()
    assert "stopped without a restart: the user's error" in missing.text()


def test_a_node_that_fails_twice_is_replaced_by_the_spare(slurm_cluster, sample_shards,
                                                           tmp_path):
    python = tmp_path / "failing_python"
    python.write_text(FAILING_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    # one task per node: three starts of two ranks are quicker than of four
    three = ["--nodes=3", "--ntasks-per-node=1", "--gpus-per-node=1", *SMALL[3:]]
    job = sbatch(JOB_SCRIPT, three, [SMOKE, *overrides(sample_shards, tmp_path, "run"),
                                     "dist.restart_pause_s=1"], tmp_path / "job.out",
                 env={"PYTHON": str(python), "FAILING_NODE": "node2", "SPARE_NODES": "1"})
    assert job.wait() == 0, job.text()
    log = job.text()
    assert "restart 1 of 3 in 1s, from the newest checkpoint" in log
    assert ("node node2 caused this failure and the one before it; restart 2 of 3 in 2s "
            "without it, on a spare node") in log
    once, twice = read_failures(tmp_path / "run")
    assert (once["culprit_hosts"], twice["culprit_hosts"]) == (["node2"], ["node2"])
    assert [c["rank"] for c in twice["culprits"]] == [1]
    assert (once["action"], twice["action"]) == ("restart", "exclude")
    last_start = json.loads((tmp_path / "run" / "starts.jsonl").read_text().splitlines()[-1])
    assert last_start["hosts"] == {"node1": 1, "node3": 1}, last_start
    assert job_state(job.job_id) == ("COMPLETED", 0)
    assert (tmp_path / "run" / "checkpoints" / "step-00000024").is_dir()  # 400 / (2 x 4) x 0.48
