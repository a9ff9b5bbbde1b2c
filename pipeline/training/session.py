"""One training process, from its config to how it ended.

    outcome = run_session(config, overrides, signals)   # process.train_process: signals first

Loads the config (an error is one line, status 2), forms the process group, holds the run
folder, trains, reports a failure in one line, and requeues the SLURM job after a
preemption save. How it ended is an Outcome (outcome.py): the user's errors and a NaN
end with 1, a crash (unexpected error, a dead peer, no rendezvous) with 70, which the
job script answers by starting the step again.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys

from omegaconf.errors import OmegaConfBaseException

from pipeline.config import Config, load_config
from pipeline.dist.endings import note_stall, record_ending
from pipeline.dist.group import RendezvousError, init_distributed, shutdown
from pipeline.dist.requeue import requeue_job
from pipeline.dist.signals import StopSignals
from pipeline.dist.watchdog import Timeouts, Watchdog
from pipeline.training.failures import explain, is_collective_failure, report_failure
from pipeline.training.outcome import CONFIG_ERROR_EXIT_CODE, CRASH_EXIT_CODE, Outcome
from pipeline.training.precision import prepare_determinism
from pipeline.training.preemption import NonFiniteLoss
from pipeline.training.rundir import close_logging
from pipeline.training.runlock import hold_run
from pipeline.training.trainer import Trainer

log = logging.getLogger("pipeline.train")


def run_session(config: str | None, overrides: list[str], signals: StopSignals) -> Outcome:
    try:
        cfg = load_config(config, overrides)
    except (ValueError, OmegaConfBaseException, OSError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return Outcome("failed", CONFIG_ERROR_EXIT_CODE)
    prepare_determinism(cfg.precision.deterministic)
    trainers: list[Trainer] = []  # the one being built or trained, for a frozen rank's step
    watchdog = Watchdog(Timeouts.of(cfg.dist), lambda message: _frozen(message, trainers),
                        stalled=note_stall)
    try:
        return _train(cfg, signals, watchdog.start(), trainers)
    finally:
        watchdog.stop()
        close_logging()  # the run's log file, for callers that go on in this process


def _train(cfg: Config, signals: StopSignals, watchdog: Watchdog,
           trainers: list[Trainer]) -> Outcome:
    try:
        env = init_distributed(cfg.dist)
    except RuntimeError as err:  # RendezvousError, or pick_device: no GPU for this rank
        log.error("%s", err)
        if isinstance(err, RendezvousError):
            return Outcome.of("crashed", cause="rendezvous", error=_first_line(err))
        return Outcome.of("failed", error=_first_line(err))
    try:
        with hold_run(cfg.run_dir, env):
            trainers.append(Trainer(cfg, env, signals, watchdog))
            ending = trainers[0].fit()
    except Exception as err:
        report_failure(err, env.rank, env.world_size, cfg.run_dir)
        if env.world_size == 1:  # no peer to wait for; a caller may train again in-process
            shutdown(env)
        return Outcome.of(_ending(err), run_dir=cfg.run_dir, error=_first_line(err),
                          cause=_cause(err, env.world_size), **_progress(trainers))
    if ending == "interrupted":
        log.warning("interrupted (Ctrl-C): the checkpoint above holds every step so far; "
                    "start the same command again to resume")
    requeued = ending == "preempted" and requeue_job(env, cfg.dist.max_requeues)
    shutdown(env)
    return Outcome.of(ending, run_dir=cfg.run_dir, requeued=requeued, **_progress(trainers))


def _ending(err: Exception) -> str:
    """diverged (a NaN), failed (the user's error, explained: retrying cannot help) or
    crashed (anything else: the job script starts the step again)."""
    if isinstance(err, NonFiniteLoss):
        return "diverged"
    return "failed" if explain(err) is not None else "crashed"


def _cause(err: Exception, world_size: int) -> str | None:
    """Of a crash: "peer" when a collective failed (another rank died first), else "own"."""
    if _ending(err) != "crashed":
        return None
    return "peer" if world_size > 1 and is_collective_failure(err) else "own"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def _progress(trainers: list[Trainer]) -> dict:
    trainer = trainers[0] if trainers else None
    if trainer is None or not hasattr(trainer, "state"):  # failed while building
        return {}
    return {"step": trainer.state.step, "validation": dict(trainer.last_validation)}


def _frozen(message: str, trainers: list[Trainer]) -> None:
    """The watchdog fired (in its own thread): the stacks of every thread, the ending for
    the job script, and the process ends at once; the main thread is stuck."""
    step = trainers[0].state.step if trainers and hasattr(trainers[0], "state") else None
    log.error("%s%s", message, "" if step is None else f" (after step {step})")
    try:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    except (AttributeError, OSError, ValueError):  # a stderr without a file (captured)
        faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
    record_ending("crashed", cause="frozen", error=message.split(";")[0], step=step)
    os._exit(CRASH_EXIT_CODE)
