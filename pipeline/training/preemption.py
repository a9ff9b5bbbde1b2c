"""Stopping together: preemption signals and non-finite losses, agreed on by all ranks.

    signals = StopSignals.install()            # pipeline.dist.signals, at process start
    stop = StopAgreement(signals)              # in the trainer
    verdict = stop.poll(step, loss)            # once per optimizer step, every rank
    if verdict.preempted: save, requeue (rank 0), exit outcome.REQUEUE_EXIT_CODE
    if verdict.interrupted (Ctrl-C on some rank): save, exit INTERRUPTED_EXIT_CODE, no requeue
    if verdict.bad_step is not None: raise NonFiniteLoss(...)

A signal reaches some ranks, not all (SLURM signals the tasks of one node first; torchrun
forwards to its own children only). Each poll all-reduces this rank's flags with MAX, so
every rank learns of a signal or a NaN/Inf loss on any rank at the same step and they
stop at the same step boundary. The reduction of step t is read at step t+1: the host
never waits for the GPU's current step, only for the one before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.dist.signals import StopSignals


class NonFiniteLoss(RuntimeError):
    pass


@dataclass(frozen=True)
class Verdict:
    preempted: bool = False  # some rank was signalled: save and stop
    interrupted: bool = False  # ... and one of the signals was a Ctrl-C: do not requeue
    bad_step: int | None = None  # the first step whose loss was NaN/Inf on some rank


class StopAgreement:
    def __init__(self, signals: StopSignals):
        self.signals = signals
        self.reason: str | None = None  # why the ranks agreed to stop
        self.interrupted = False  # a Ctrl-C on some rank: stop without a requeue
        self._pending: tuple[int, torch.Tensor, dist.Work | None] | None = None

    def poll(self, step: int, loss: torch.Tensor) -> Verdict:
        """Starts the reduction of this step's flags; returns the previous step's verdict."""
        verdict = self._collect()
        signalled = torch.full((), self._signal_level(), device=loss.device)
        flags = torch.stack([signalled, (~torch.isfinite(loss)).float()])  # no host copy
        self._pending = (step, flags, dist.all_reduce(flags, dist.ReduceOp.MAX, async_op=True))
        return verdict

    def settle(self) -> Verdict:
        """The verdict on every step so far (before a checkpoint: never save a NaN)."""
        return self._collect()

    @property
    def requested(self) -> bool:
        """Some rank was signalled, in any verdict collected so far (poll's or settle's):
        a stop is never lost because a save collected it."""
        return self.reason is not None

    def _collect(self) -> Verdict:
        if self._pending is None:
            return Verdict()
        step, flags, work = self._pending
        self._pending = None
        work.wait()
        level, bad = flags.tolist()
        if level and self.reason is None:
            self.reason = self.signals.received or "another rank's signal"
        self.interrupted = self.interrupted or level == 2
        return Verdict(level > 0, level == 2, step if bad else None)

    def _signal_level(self) -> float:
        """0 none, 1 a preemption, 2 a Ctrl-C: the MAX over ranks keeps the strongest."""
        if self.signals.received is None:
            return 0.0
        return 2.0 if self.signals.interrupted else 1.0
