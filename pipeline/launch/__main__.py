"""Submits the training to SLURM through submitit: the job script's run, from Python.

    python -m pipeline.launch --nodes 8 --gpus-per-node 8 --config configs/bn_inception.yaml \
        data.shards=/data/imagenet-shards [--partition P --account A --qos Q --constraint C \
        --time 24:00:00 --mem 0 --cpus-per-task 12] [--wait]

Prints the job id, its logs, the run folder and the W&B project; `--wait` follows the job
(through its requeues) and exits with 0 when every task finished its training. What the
job does is pipeline/launch/submit.py's docstring.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.launch.submit import submit_training


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.launch",
                                description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8, help="0 for a CPU-only job")
    p.add_argument("--tasks-per-node", type=int, help="default: one per GPU (1 without GPUs)")
    p.add_argument("--cpus-per-task", type=int, default=12)
    p.add_argument("--time", default="24:00:00", help="minutes, or [D-]HH:MM:SS")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--qos")
    p.add_argument("--constraint")
    p.add_argument("--mem", help="per node, as sbatch takes it (0: all of it, 256G)")
    p.add_argument("--signal-s", type=int, default=300, help="USR2 this long before the limit")
    p.add_argument("--folder", type=Path, help="submitit's files and the logs "
                   "(default: RUN_DIR/submitit)")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends")
    p.add_argument("--config", default="configs/bn_inception.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.shards=/data")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return submit_training(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
