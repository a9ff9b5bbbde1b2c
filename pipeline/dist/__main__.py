"""Prints who this task is, as one JSON line: its launch, node and visible GPUs.

    srun python -m pipeline.dist          # what DRY_RUN=1 sbatch slurm/train_64gpu.sh runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from pipeline.dist.environment import detect_launch, node_name


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m pipeline.dist",
                            description=__doc__.split("\n")[0]).parse_args(argv)
    launch = detect_launch()
    print(json.dumps({**asdict(launch), "node": node_name(),
                      "visible_gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
