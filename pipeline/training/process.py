"""A training process from its first moment: the stop signals caught, then the session.

    outcome = train_process("configs/bn_inception.yaml", ["data.shards=/data/shards"])

Torch alone takes seconds to import, more from a shared file system at 64 ranks, and a
stop signal in that time would kill the rank with its default action; so the handlers go
in first and the session's modules (torch with them) are imported after.
"""

from __future__ import annotations

import os

from pipeline.dist.signals import StopSignals
from pipeline.training.outcome import Outcome

# Set by slurm/train_64gpu.sh: every task appends "RANK ENDING" here, since srun's own
# status after --kill-on-bad-exit is that of the ranks it stopped (143), whatever the cause.
ENDINGS_FILE = "PIPELINE_ENDINGS_FILE"


def train_process(config: str | None, overrides: list[str]) -> Outcome:
    signals = StopSignals.install()
    from pipeline.training.session import run_session

    try:
        outcome = run_session(config, overrides, signals)
    finally:
        signals.restore()
    record_ending(outcome.ending)
    return outcome


def record_ending(ending: str) -> None:
    path = os.environ.get(ENDINGS_FILE)
    if path:
        rank = os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0"))
        with open(path, "a") as f:
            f.write(f"{rank} {ending}\n")
