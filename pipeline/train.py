"""Trains BN-Inception on the shards: one process, under torchrun, or under srun.

    python -m pipeline.train --config configs/bn_inception.yaml data.shards=/data/shards
    torchrun --nproc-per-node 8 -m pipeline.train --config configs/bn_inception.yaml \\
        data.shards=/data/shards dist.engine=deepspeed
    srun --ntasks-per-node 8 python -m pipeline.train --config ... name=bn_inception_64

`--describe` lists every config key with its default and help. The run writes to
runs/<name>/ (config.yaml, derived.json, metrics.jsonl, checkpoints/, logs/), resumes
from its newest valid checkpoint when started again, and on SIGUSR1/SIGTERM saves a
checkpoint on every rank and exits with 75 for the launcher to requeue.
"""

from __future__ import annotations

import argparse
import logging
import sys

from omegaconf.errors import OmegaConfBaseException

from pipeline.config import Config, describe_tree, load_config
from pipeline.data import ShardError
from pipeline.launch.distributed import init_distributed, shutdown
from pipeline.training.checkpoint import CheckpointError
from pipeline.training.preemption import NonFiniteLoss
from pipeline.training.trainer import Trainer

log = logging.getLogger("pipeline.train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--config", help="recipe YAML (differences from the defaults)")
    p.add_argument("--describe", action="store_true", help="list every key and exit")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.batch_size=64")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.describe:
        print(describe_tree(Config))
        return 0
    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, OmegaConfBaseException, OSError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    env = init_distributed(cfg.dist)
    try:
        status = Trainer(cfg, env).fit()
    except (NonFiniteLoss, ShardError, CheckpointError) as err:  # explained in the message
        log.error("%s: %s", type(err).__name__, err)
        return 1
    except Exception:
        log.exception("rank %d failed (a collective that fails or times out usually means "
                      "another rank died first: see every rank's log in %s/logs)",
                      env.rank, cfg.run_dir)
        return 1
    shutdown(env)
    return status


if __name__ == "__main__":
    sys.exit(main())
