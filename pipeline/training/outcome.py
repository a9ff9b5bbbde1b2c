"""How a training process ended, for whoever started it (the command, the submitit job,
the demo, the paper's experiments): read here, not from logs or metrics.jsonl.

    outcome = train_process(config, overrides)      # pipeline/training/process.py
    outcome.ending        # done | diverged | preempted | interrupted | failed | crashed
    outcome.status        # the process exit status (STATUS, or 2 for a config error)
    outcome.validation    # the last validation this process ran: val/top1, val/images, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.dist.signals import INTERRUPTED_EXIT_CODE

REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; after a preemption save
CONFIG_ERROR_EXIT_CODE = 2
# EX_SOFTWARE: an unexpected error, a collective that failed because a peer died, a
# rendezvous that did not form. Another start may well work: the job script restarts
# the step. "failed" (1: the user's error, explained in one line) and "diverged" (1: a
# NaN) would fail the same way again, and end the job.
CRASH_EXIT_CODE = 70
STATUS = {"done": 0, "failed": 1, "diverged": 1, "preempted": REQUEUE_EXIT_CODE,
          "interrupted": INTERRUPTED_EXIT_CODE, "crashed": CRASH_EXIT_CODE}


@dataclass(frozen=True)
class Outcome:
    ending: str  # a key of STATUS
    status: int  # the exit status: STATUS[ending], or CONFIG_ERROR_EXIT_CODE
    run_dir: Path | None = None
    requeued: bool = False  # SLURM will run the job again and it resumes
    step: int = 0  # optimizer steps done when it ended (0 when it never started)
    validation: dict = field(default_factory=dict)  # the last val metrics, with "step"
    cause: str | None = None  # of a crash: own | peer | rendezvous | frozen (dist/endings.py)
    error: str = ""  # the first line of the error that ended it, if one did

    @classmethod
    def of(cls, ending: str, **known) -> Outcome:
        return cls(ending, STATUS[ending], **known)

    @property
    def preempted(self) -> bool:
        return self.ending == "preempted"

    def summary(self) -> dict:
        """What the submitit job returns: the run folder, the step, the last val top-1."""
        return {"run_dir": str(self.run_dir), "step": self.step,
                **({"val/top1": self.validation["val/top1"]} if self.validation else {})}
