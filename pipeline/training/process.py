"""A training process from its first moment: the stop signals caught, then the session.

    outcome = train_process("configs/bn_inception.yaml", ["data.shards=/data/shards"])

Torch alone takes seconds to import, more from a shared file system at 64 ranks, and a
stop signal in that time would kill the rank with its default action; so the handlers go
in first and the session's modules (torch with them) are imported after.
"""

from __future__ import annotations

from pipeline.dist.endings import record_ending, record_start
from pipeline.dist.signals import StopSignals
from pipeline.training.outcome import Outcome


def train_process(config: str | None, overrides: list[str]) -> Outcome:
    signals = StopSignals.install()
    record_start()  # for slurm/train_64gpu.sh: a rank that dies silently is known by its host
    from pipeline.training.session import run_session

    try:
        outcome = run_session(config, overrides, signals)
    finally:
        signals.restore()
    record_ending(outcome.ending, outcome.cause, outcome.error, outcome.step)
    return outcome
