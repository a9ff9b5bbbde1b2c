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

import argparse
import sys

# Only the signal handlers' module comes first: the process installs them before torch.
from pipeline.training.process import train_process


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.train",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--config", help="recipe YAML (differences from the defaults)")
    p.add_argument("--describe", action="store_true", help="list every key and exit")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.batch_size=64")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.describe:
        from pipeline.config import Config, describe_tree

        print(describe_tree(Config))
        return 0
    return train_process(args.config, args.overrides).status


if __name__ == "__main__":
    sys.exit(main())
