"""Trains BN-Inception on the shards: one process, under torchrun, or under srun.

    python -m pipeline.train --config configs/bn_inception.yaml data.shards=/data/shards
    torchrun --nproc-per-node 8 -m pipeline.train --config configs/bn_inception.yaml \\
        data.shards=/data/shards dist.engine=deepspeed
    srun --ntasks-per-node 8 python -m pipeline.train --config ... name=bn_inception_64
    sbatch slurm/train_64gpu.sh [CONFIG] [key=value ...]      # or: python -m pipeline.launch

`--describe` lists every config key with its default and help. The run writes to
runs/<name>/ (config.yaml, derived.json, metrics.jsonl, checkpoints/, logs/), resumes
from its newest valid checkpoint when started again, and on SIGUSR2/SIGUSR1/SIGTERM
saves a checkpoint on every rank; rank 0 requeues the SLURM job, and every rank exits
with 75. Ctrl-C saves the same way and exits 130 without a requeue.
"""

from __future__ import annotations

import sys

from pipeline.launch.signals import StopSignals


def run(argv: list[str] | None = None):
    """The training process; returns its pipeline.training.session.Outcome."""
    signals = StopSignals.install()
    # Imported after the handlers are in: torch alone takes seconds to import, more from
    # a shared file system at 64 ranks, and a stop signal then would kill the rank.
    from pipeline.training.session import run_session

    try:
        return run_session(argv, signals)
    finally:
        signals.restore()


def main(argv: list[str] | None = None) -> int:
    return run(argv).status


if __name__ == "__main__":
    sys.exit(main())
