"""How each task of a job step ended, in a file of its own, for the job script to read.

    record_start()                                     # the first moment of a task
    record_ending("crashed", cause="own", error=..., step=120)
    ranks = read_endings(folder)                       # after the step: every task's record

slurm/train_64gpu.sh names a fresh folder per step in PIPELINE_ENDINGS_DIR. srun's own
status cannot say what happened: after --kill-on-bad-exit it is that of the ranks it
stopped (143), whatever the first one did. One file per task, replaced whole, since
appends to one shared file from several nodes can interleave on NFS.

A task that wrote its start but no ending died without a word (SIGKILL, a segfault, the
OOM killer, its node lost): with the "own" crashes, the frozen ranks (past a watchdog
timeout, or stopped whole: stalled_s) those are the ranks that caused the failure
(`culprits`); a rank whose collective failed because a peer died ("peer") is a victim.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.dist.environment import node_name

ENDINGS_DIR = "PIPELINE_ENDINGS_DIR"
CAUSES = ("own", "peer", "rendezvous", "frozen")  # of a "crashed" ending


@dataclass(frozen=True)
class RankEnding:
    rank: int
    host: str
    pid: int
    started: float
    ending: str | None = None  # None: the task died without writing one
    cause: str | None = None  # for "crashed": one of CAUSES
    error: str = ""  # the first line of the error, when there was one
    step: int | None = None  # optimizer steps done when it ended
    time: float | None = None  # when it ended
    stalled_s: float = 0.0  # the longest time the whole process stood still (watchdog.py)

    @property
    def silent(self) -> bool:
        return self.ending is None

    @property
    def culprit(self) -> bool:
        """This rank caused the failure: died silently, crashed by itself or froze."""
        return self.silent or self.stalled_s > 0 or (
            self.ending == "crashed" and self.cause in ("own", "frozen"))


def _rank() -> int:
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")))


def _write(record: dict) -> None:
    folder = os.environ.get(ENDINGS_DIR)
    if not folder:
        return
    path = Path(folder) / f"rank-{record['rank']:05d}.json"
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(record) + "\n")
    os.replace(partial, path)


_started: dict = {}
_stalled = {"stalled_s": 0.0}


def record_start() -> None:
    """Before anything slow: a task that dies later is then known by its rank and host."""
    _started.update(rank=_rank(), host=node_name(), pid=os.getpid(), started=time.time())
    _write(_started)


def note_stall(seconds: float) -> None:
    """The whole process stood still this long (the watchdog saw it); the ending says so."""
    _stalled["stalled_s"] = round(seconds, 1)


def record_ending(ending: str, cause: str | None = None, error: str = "",
                  step: int | None = None) -> None:
    if not _started:
        record_start()
    _write({**_started, "ending": ending, "cause": cause, "error": error[:300], "step": step,
            "time": time.time(), **_stalled})


def read_endings(folder: Path) -> list[RankEnding]:
    """Every task's record in `folder`, by rank (a record cut short is skipped)."""
    ranks = []
    for path in sorted(Path(folder).glob("rank-*.json")):
        try:
            ranks.append(RankEnding(**json.loads(path.read_text())))
        except (ValueError, TypeError):
            continue
    return ranks
