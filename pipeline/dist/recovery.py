"""After a training step of a SLURM job ended badly: restart it, stop the job, or restart
it without a node; and the record of every failure in the run folder (failures.jsonl).

    step = StepEnd(read_endings(folder), status=143)
    decision = decide(step, Budget(attempt=0, max_restarts=3, pause_s=10, spare=1),
                      previous=last_failure(run_dir, job_id))
    append_failure(run_dir, failure_record(step, decision, job_id, requeue))

What another start cannot fix ends the job at once: the user's error or a NaN, a config
error, a save for a requeue, Ctrl-C. Anything else is a crash, restarted up to
dist.max_restarts times per job with a growing pause. A node whose ranks caused two
failures in a row (the culprits of endings.py: died silently, crashed by themselves or
froze) is left out when the allocation has a spare node to take its place; without one
the job stops and says how to submit again without it. SLURM refuses to change a running
job's ExcNodeList (verified on 22.05), so a requeue cannot leave a node out by itself.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.dist.endings import RankEnding

FAILURES = "failures.jsonl"


@dataclass(frozen=True)
class StepEnd:
    ranks: list[RankEnding]  # every task's record (endings.read_endings)
    status: int  # srun's exit status

    @property
    def endings(self) -> set[str]:
        return {r.ending for r in self.ranks if r.ending}

    @property
    def culprits(self) -> list[RankEnding]:
        return [r for r in self.ranks if r.culprit]

    @property
    def culprit_hosts(self) -> set[str]:
        """The hosts of the ranks that caused the failure; none when every host of the
        step had one (a fault of the job, not of a node)."""
        hosts = {r.host for r in self.culprits}
        every = {r.host for r in self.ranks}
        return set() if len(every) > 1 and hosts >= every else hosts


@dataclass(frozen=True)
class Budget:
    attempt: int  # restarts already done in this job
    max_restarts: int  # dist.max_restarts
    pause_s: int  # dist.restart_pause_s: restart k waits k times this
    spare: int = 0  # nodes of the allocation that no step uses (SPARE_NODES), not left out


@dataclass(frozen=True)
class Decision:
    action: str  # restart | exclude (restart without `exclude`) | stop
    status: int = 0  # the job's exit status when it stops
    pause_s: int = 0
    exclude: tuple[str, ...] = ()
    why: str = ""  # one line for the job's log and failures.jsonl
    failure: bool = True  # a failure to record (not a preemption or Ctrl-C)


def decide(step: StepEnd, budget: Budget, previous: dict | None = None) -> Decision:
    endings = step.endings
    if "preempted" in endings:
        return Decision("stop", 75, why="saved for a requeue", failure=False)
    if "interrupted" in endings:
        return Decision("stop", 130, why="interrupted (Ctrl-C)", failure=False)
    if endings & {"failed", "diverged"}:
        what = "a NaN" if "diverged" in endings else "the user's error (the line above)"
        status = step.status if 0 < step.status <= 2 else 1
        return Decision("stop", status, why=f"stopped without a restart: {what}; another "
                        "start would fail the same way")
    failed = f"the step crashed (status {step.status}{_who(step)})"
    if budget.attempt >= budget.max_restarts:
        return Decision("stop", step.status or 1, why=f"giving up: {failed} after "
                        f"{budget.attempt} restarts in this job (dist.max_restarts="
                        f"{budget.max_restarts})")
    attempt = budget.attempt + 1
    pause = attempt * budget.pause_s
    again = sorted(step.culprit_hosts & set((previous or {}).get("culprit_hosts", [])))
    if again:
        named = ",".join(again)
        if budget.spare < len(again):
            return Decision("stop", step.status or 1, why=(
                f"giving up: {failed}; node {named} caused this failure and the one before "
                f"it, and the allocation has no spare node to take its place: submit again "
                f"with --exclude={named} and the same name=, or with a spare node "
                f"(SPARE_NODES=1 sbatch --nodes=N+1 ...)"))
        return Decision("exclude", pause_s=pause, exclude=tuple(again), why=(
            f"{failed}: node {named} caused this failure and the one before it; restart "
            f"{attempt} of {budget.max_restarts} in {pause}s without it, on a spare node"))
    return Decision("restart", pause_s=pause, why=f"{failed}: restart {attempt} of "
                    f"{budget.max_restarts} in {pause}s, from the newest checkpoint")


def _who(step: StepEnd) -> str:
    culprits = step.culprits
    if not step.ranks:
        return "; no rank started"
    if not culprits:
        return "; every rank saw a peer fail"
    first = culprits[0]
    return f"; rank {first.rank} on {first.host} {_what(first)}" + (
        f" and {len(culprits) - 1} more" if len(culprits) > 1 else "")


def _what(rank: RankEnding) -> str:
    if rank.silent:
        return "died without a word (killed, a segfault, out of memory or its node lost)"
    if rank.stalled_s:
        return (f"stood still for {rank.stalled_s:.0f} s, every thread (stopped, or a hung "
                "file system or driver)")
    if rank.cause == "frozen":
        return f"froze ({rank.error})"
    return f"failed: {rank.error}"


def failure_record(step: StepEnd, decision: Decision, job: str, requeue: int) -> dict:
    """One line of failures.jsonl."""
    ended = [r.time for r in step.ranks if r.time is not None]
    return {"time": time.time(), "job": job, "requeue": requeue, "status": step.status,
            "signal": _signal_name(step.status),
            "first_ending": min(ended) if ended else None,
            "step": max((r.step for r in step.ranks if r.step), default=None),
            "culprits": [{"rank": r.rank, "host": r.host, "what": _what(r)}
                         for r in step.culprits],
            "culprit_hosts": sorted(step.culprit_hosts), "ranks": len(step.ranks),
            "action": decision.action, "why": decision.why}


def _signal_name(status: int) -> str | None:
    """SIGTERM for 143: the shell's 128 + the signal that ended srun's tasks."""
    try:
        return signal.Signals(status - 128).name if status > 128 else None
    except ValueError:
        return None


def last_failure(run_dir: Path, job: str) -> dict | None:
    """The newest failure this job recorded, if the newest record is this job's."""
    rows = read_failures(run_dir)
    return rows[-1] if rows and rows[-1].get("job") == job else None


def read_failures(run_dir: Path) -> list[dict]:
    path = run_dir / FAILURES
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return rows


def append_failure(run_dir: Path, record: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / FAILURES, "a") as f:
        f.write(json.dumps(record) + "\n")

