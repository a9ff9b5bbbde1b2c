"""One training process, from its command line to how it ended.

    outcome = run_session(argv, signals)   # pipeline/train.py: signals installed first
    outcome.status, outcome.requeued, outcome.summary
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf.errors import OmegaConfBaseException

from pipeline.config import Config, describe_tree, load_config
from pipeline.launch.distributed import init_distributed, shutdown
from pipeline.launch.requeue import requeue_job
from pipeline.launch.signals import INTERRUPTED_EXIT_CODE, StopSignals
from pipeline.training.failures import report_failure
from pipeline.training.precision import prepare_determinism
from pipeline.training.preemption import REQUEUE_EXIT_CODE
from pipeline.training.rundir import close_logging
from pipeline.training.runlock import hold_run
from pipeline.training.trainer import Trainer

log = logging.getLogger("pipeline.train")


@dataclass(frozen=True)
class Outcome:
    """How a training process ended (the submitit launcher reads more than the status)."""

    status: int  # 0 done, 1 failed, 2 config error, REQUEUE_EXIT_CODE preempted and saved,
    #              INTERRUPTED_EXIT_CODE stopped by Ctrl-C and saved
    run_dir: Path | None = None
    requeued: bool = False  # SLURM will run the job again and it resumes
    summary: dict = field(default_factory=dict)  # rank 0, when done: step, val top-1

    @property
    def preempted(self) -> bool:
        return self.status == REQUEUE_EXIT_CODE


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from pipeline import train  # its docstring is the command's help

    p = argparse.ArgumentParser(prog="python -m pipeline.train",
                                description=train.__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=train.__doc__.split("\n", 2)[2])
    p.add_argument("--config", help="recipe YAML (differences from the defaults)")
    p.add_argument("--describe", action="store_true", help="list every key and exit")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.batch_size=64")
    return p.parse_args(argv)


def run_session(argv: list[str] | None, signals: StopSignals) -> Outcome:
    args = parse_args(argv)
    if args.describe:
        print(describe_tree(Config))
        return Outcome(0)
    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, OmegaConfBaseException, OSError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return Outcome(2)
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
        return Outcome(1)
    try:
        with hold_run(cfg.run_dir, env):
            status = Trainer(cfg, env, signals).fit()
    except Exception as err:
        report_failure(err, env.rank, env.world_size, cfg.run_dir)
        if env.world_size == 1:  # no peer to wait for; a caller may train again in-process
            shutdown(env)
        return Outcome(1, cfg.run_dir)
    if status == INTERRUPTED_EXIT_CODE:
        log.warning("interrupted (Ctrl-C): the checkpoint above holds every step so far; "
                    "start the same command again to resume")
    requeued = status == REQUEUE_EXIT_CODE and requeue_job(env, cfg.dist.max_requeues)
    shutdown(env)
    summary = _summary(cfg.run_dir) if status == 0 and env.is_main else {}
    return Outcome(status, cfg.run_dir, requeued, summary)


def _summary(run_dir: Path) -> dict:
    """The last validation of the run, from its metrics.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val/top1" in r]
    return {"run_dir": str(run_dir), "step": rows[-1]["step"] if rows else 0,
            **({"val/top1": val[-1]["val/top1"]} if val else {})}
