"""Checks a SLURM allocation in under two minutes, before a long run; names every failure.

    srun python -m pipeline.preflight --config configs/bn_inception.yaml data.shards=/data
    PREFLIGHT=1 sbatch slurm/train_64gpu.sh ...        # the job script runs it first

Per rank: host, local rank, GPU and memory, CPU affinity; all-reduce bus bandwidth inside
each node and across nodes beside what such links give; the shards from every node
(manifests, indexes, a sample of tars against their sha256, read MB/s); the
synchronized-BN groups by node (pipeline/launch/checks.py). Exit status 0 when all
pass, 1 with a `FAIL host rank N: ...` line for each failure.
"""

from __future__ import annotations

import argparse
import sys

from omegaconf.errors import OmegaConfBaseException

from pipeline.config import load_config
from pipeline.dist.group import init_distributed, shutdown
from pipeline.launch.checks import run_preflight


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.preflight",
                                description=__doc__.split("\n")[0])
    p.add_argument("--config", help="the recipe the run will use")
    p.add_argument("--shards-per-node", type=int, default=2,
                   help="tars each node hashes, per split (each node its own)")
    p.add_argument("overrides", nargs="*", help="the run's overrides (data.shards=...)")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, OmegaConfBaseException, OSError) as err:  # names the key
        print(f"config error: {err}", file=sys.stderr)
        return 2
    env = init_distributed(cfg.dist)
    failures = run_preflight(cfg, env, args.shards_per_node)
    shutdown(env)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
