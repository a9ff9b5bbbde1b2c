"""What slurm/train_64gpu.sh does after a training step failed: restart, leave a node out,
or stop; every failure recorded in the run folder's failures.jsonl.

    python -m pipeline.triage --endings DIR --status 143 --attempt 0 --spare 1 \\
        --config configs/bn_inception.yaml name=run-1234 ...
    -> "restart 10" | "exclude 10 node3" | "stop 1" on stdout, the reason on stderr

DIR holds each task's ending (pipeline/dist/endings.py); the rules are
pipeline/dist/recovery.py's. The config gives dist.max_restarts, dist.restart_pause_s
and the run folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from omegaconf.errors import OmegaConfBaseException

from pipeline.config import DistConfig, load_config
from pipeline.dist.endings import read_endings
from pipeline.dist.recovery import (
    Budget,
    StepEnd,
    append_failure,
    decide,
    failure_record,
    last_failure,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.triage",
                                description=__doc__.split("\n")[0])
    p.add_argument("--endings", type=Path, required=True, help="the step's endings folder")
    p.add_argument("--status", type=int, required=True, help="srun's exit status")
    p.add_argument("--attempt", type=int, default=0, help="restarts done in this job")
    p.add_argument("--spare", type=int, default=0, help="unused nodes of the allocation")
    p.add_argument("--config", help="the run's recipe")
    p.add_argument("overrides", nargs="*", help="the run's overrides")
    args = p.parse_args(argv)
    run_dir, dist = None, DistConfig()
    try:
        cfg = load_config(args.config, args.overrides)
        run_dir, dist = cfg.run_dir, cfg.dist
    except (ValueError, OmegaConfBaseException, OSError) as err:  # the ranks said it too
        print(f"triage: config error ({err}); taking dist.* defaults", file=sys.stderr)
    job = os.environ.get("SLURM_JOB_ID", "")
    step = StepEnd(read_endings(args.endings), args.status)
    previous = last_failure(run_dir, job) if run_dir else None
    decision = decide(step, Budget(args.attempt, dist.max_restarts, dist.restart_pause_s,
                                   args.spare), previous)
    if decision.failure and run_dir is not None:
        requeue = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        append_failure(run_dir, failure_record(step, decision, job, requeue))
    print(f"train_64gpu.sh: {decision.why}", file=sys.stderr)
    if decision.action == "stop":
        print(f"stop {decision.status}")
    elif decision.action == "exclude":
        print(f"exclude {decision.pause_s} {','.join(decision.exclude)}")
    else:
        print(f"restart {decision.pause_s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
