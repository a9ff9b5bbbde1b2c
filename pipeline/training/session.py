"""One training process, from its config to how it ended.

    outcome = run_session(config, overrides, signals)   # process.train_process: signals first

Loads the config (an error is one line, status 2), forms the process group, holds the run
folder, trains, reports a failure in one line, and requeues the SLURM job after a
preemption save. How it ended is an Outcome (outcome.py): the user's errors and a NaN
end with 1, a crash (unexpected error, a dead peer, no rendezvous) with 70, which the
job script answers by starting the step again.
"""

from __future__ import annotations

import logging
import sys

from omegaconf.errors import OmegaConfBaseException

from pipeline.config import Config, load_config
from pipeline.dist.group import RendezvousError, init_distributed, shutdown
from pipeline.dist.requeue import requeue_job
from pipeline.dist.signals import StopSignals
from pipeline.training.failures import explain, report_failure
from pipeline.training.outcome import CONFIG_ERROR_EXIT_CODE, Outcome
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
    try:
        return _train(cfg, signals)
    finally:
        close_logging()  # the run's log file, for callers that go on in this process


def _train(cfg: Config, signals: StopSignals) -> Outcome:
    try:
        env = init_distributed(cfg.dist)
    except RuntimeError as err:  # RendezvousError, or pick_device: no GPU for this rank
        log.error("%s", err)
        return Outcome.of("crashed" if isinstance(err, RendezvousError) else "failed")
    trainer = None
    try:
        with hold_run(cfg.run_dir, env):
            trainer = Trainer(cfg, env, signals)
            ending = trainer.fit()
    except Exception as err:
        report_failure(err, env.rank, env.world_size, cfg.run_dir)
        if env.world_size == 1:  # no peer to wait for; a caller may train again in-process
            shutdown(env)
        return Outcome.of(_ending(err), run_dir=cfg.run_dir, **_progress(trainer))
    if ending == "interrupted":
        log.warning("interrupted (Ctrl-C): the checkpoint above holds every step so far; "
                    "start the same command again to resume")
    requeued = ending == "preempted" and requeue_job(env, cfg.dist.max_requeues)
    shutdown(env)
    return Outcome.of(ending, run_dir=cfg.run_dir, requeued=requeued, **_progress(trainer))


def _ending(err: Exception) -> str:
    """diverged (a NaN), failed (the user's error, explained: retrying cannot help) or
    crashed (anything else: the job script starts the step again)."""
    if isinstance(err, NonFiniteLoss):
        return "diverged"
    return "failed" if explain(err) is not None else "crashed"


def _progress(trainer: Trainer | None) -> dict:
    if trainer is None:
        return {}
    return {"step": trainer.state.step, "validation": dict(trainer.last_validation)}
