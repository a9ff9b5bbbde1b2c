"""What the job script does after a failed step (pipeline/dist/recovery.py), from each
task's ending as the tasks write them (pipeline/dist/endings.py), and the command that
the job script runs (python -m pipeline.triage)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.dist.endings import ENDINGS_DIR, RankEnding, read_endings, record_ending, record_start
from pipeline.dist.recovery import Budget, StepEnd, decide, read_failures

BUDGET = Budget(attempt=0, max_restarts=3, pause_s=10, spare=0)


def rank(r: int, host: str, ending: str | None, cause: str | None = None,
         error: str = "") -> RankEnding:
    return RankEnding(r, host, 1000 + r, 0.0, ending, cause, error, 40, 5.0)


def killed_on(host: str) -> StepEnd:
    """Rank 2 on `host` killed; the three others saw it through a failed collective."""
    return StepEnd([rank(0, "node1", "crashed", "peer"), rank(1, "node1", "crashed", "peer"),
                    rank(2, host, None), rank(3, "node2", "crashed", "peer")], 143)


def test_a_crash_is_restarted_with_a_growing_pause_up_to_the_cap():
    step = killed_on("node2")
    first = decide(step, BUDGET)
    assert (first.action, first.pause_s) == ("restart", 10)
    assert first.why == ("the step crashed (status 143; rank 2 on node2 died without a word "
                         "(killed, a segfault, out of memory or its node lost)): restart 1 "
                         "of 3 in 10s, from the newest checkpoint")
    assert decide(step, Budget(2, 3, 10)).pause_s == 30
    last = decide(step, Budget(3, 3, 10))
    assert (last.action, last.status) == ("stop", 143)
    assert last.why.startswith("giving up: the step crashed") and "after 3 restarts" in last.why


@pytest.mark.parametrize("ending, status, expected", [
    ("failed", 1, 1), ("failed", 2, 2), ("failed", 143, 1), ("diverged", 143, 1)])
def test_what_another_start_cannot_fix_ends_the_job_at_once(ending, status, expected):
    step = StepEnd([rank(0, "node1", ending), rank(1, "node1", "crashed", "peer")], status)
    decision = decide(step, BUDGET)
    assert (decision.action, decision.status, decision.failure) == ("stop", expected, True)
    assert "another start would fail the same way" in decision.why


def test_a_requeue_save_and_ctrl_c_are_not_failures():
    saved = decide(StepEnd([rank(0, "node1", "preempted"), rank(1, "node1", None)], 143), BUDGET)
    assert (saved.action, saved.status, saved.failure) == ("stop", 75, False)
    stopped = decide(StepEnd([rank(0, "node1", "interrupted")], 130), BUDGET)
    assert (stopped.action, stopped.status, stopped.failure) == ("stop", 130, False)


def test_culprits_are_the_silent_the_own_crashes_and_the_frozen_not_the_victims():
    step = StepEnd([rank(0, "node1", "crashed", "peer"), rank(1, "node1", "crashed", "own",
                                                              "RuntimeError: ECC"),
                    rank(2, "node2", "crashed", "frozen", "frozen: save has taken 700 s"),
                    rank(3, "node3", "crashed", "rendezvous")], 70)
    assert [r.rank for r in step.culprits] == [1, 2]
    assert step.culprit_hosts == {"node1", "node2"}
    assert "rank 1 on node1 failed: RuntimeError: ECC and 1 more" in decide(step, BUDGET).why
    stopped = RankEnding(1, "node2", 7, 0.0, "crashed", "peer", "timed out", 4, 9.0, 31.0)
    step = StepEnd([rank(0, "node1", "crashed", "peer"), stopped], 143)
    assert [r.rank for r in step.culprits] == [1]  # the rank stopped whole, not its peer
    assert "rank 1 on node2 stood still for 31 s, every thread" in decide(step, BUDGET).why
    everywhere = StepEnd([rank(0, "node1", None), rank(1, "node2", None)], 137)
    assert everywhere.culprit_hosts == set()  # every host: a fault of the job, not a node
    assert "every rank saw a peer fail" in decide(
        StepEnd([rank(0, "node1", "crashed", "peer")], 70), BUDGET).why
    assert "no rank started" in decide(StepEnd([], 1), BUDGET).why


def test_a_node_that_fails_twice_in_a_row_is_replaced_by_a_spare_or_named():
    previous = {"culprit_hosts": ["node2"]}
    once = decide(killed_on("node2"), Budget(0, 3, 10, spare=1), {"culprit_hosts": ["node1"]})
    assert once.action == "restart"  # another node failed the time before
    twice = decide(killed_on("node2"), Budget(1, 3, 10, spare=1), previous)
    assert (twice.action, twice.exclude, twice.pause_s) == ("exclude", ("node2",), 20)
    assert "node node2 caused this failure and the one before it; restart 2 of 3" in twice.why
    no_spare = decide(killed_on("node2"), Budget(1, 3, 10, spare=0), previous)
    assert (no_spare.action, no_spare.status) == ("stop", 143)
    assert "submit again with --exclude=node2 and the same name=" in no_spare.why


def test_the_endings_are_one_file_per_task_and_the_command_records_the_failure(
        tmp_path, monkeypatch):
    endings = tmp_path / "endings"
    endings.mkdir()
    monkeypatch.setenv(ENDINGS_DIR, str(endings))
    for r, ending in ((0, "crashed"), (1, None)):
        monkeypatch.setenv("SLURM_PROCID", str(r))
        monkeypatch.setenv("SLURMD_NODENAME", f"node{r + 1}")
        record_start()
        if ending:
            record_ending(ending, "peer", "RuntimeError: Connection closed by peer", 12)
    got = read_endings(endings)
    assert [(e.rank, e.host, e.ending, e.cause, e.step) for e in got] == [
        (0, "node1", "crashed", "peer", 12), (1, "node2", None, None, None)]
    (endings / "rank-00002.json").write_text('{"rank": 2, "host"')  # cut short by a kill
    assert len(read_endings(endings)) == 2

    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "pipeline.triage", "--endings", str(endings),
               "--status", "143", "--attempt", "1", "--spare", "1", "--config",
               "configs/smoke_cpu.yaml", f"runs_dir={runs}", "name=r", "data.shards=x",
               "dist.max_restarts=2",
               "dist.restart_pause_s=3"]
    env = {"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "0"}
    first = subprocess.run(command, capture_output=True, text=True, env={**_env(), **env})
    assert first.stdout == "restart 6\n", first.stderr
    assert "rank 1 on node2 died without a word" in first.stderr
    second = subprocess.run(command, capture_output=True, text=True, env={**_env(), **env})
    assert second.stdout == "exclude 6 node2\n", second.stderr
    records = read_failures(runs / "r")
    assert [(f["job"], f["culprit_hosts"], f["action"], f["step"], f["signal"])
            for f in records] == [("77", ["node2"], "restart", 12, "SIGTERM"),
                                  ("77", ["node2"], "exclude", 12, "SIGTERM")]
    assert json.loads((runs / "r" / "failures.jsonl").read_text().splitlines()[0])["ranks"] == 2


def _env() -> dict[str, str]:
    import os
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "PIPELINE"))}
