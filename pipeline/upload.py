"""Sends a run to W&B from its run folder, as one complete W&B run.

    python -m pipeline.upload runs/NAME [--mode online|offline] [--id ID]
        [--project P] [--entity E]

For clusters whose nodes do not reach W&B (log.wandb: offline), and for runs whose W&B
start failed. `wandb sync` of the offline segments a requeued job leaves does not give
one run: segments with one id overwrite each other. This command rebuilds the run from
what the run folder keeps for good: metrics.jsonl (every step once, across restarts),
config.yaml, derived.json, starts.jsonl and the sample grids in samples/. Run it on a
machine that reaches W&B, for a finished run or for one still training; each call makes
a new W&B run (or fills the one --id names, which should be new).

It reads only the run folder and writes W&B's own files under RUN_DIR/upload/; the
API key comes from WANDB_API_KEY or `wandb login`, as for training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.reports.runs import ReportError
from pipeline.reports.wandb_run import upload


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.upload",
                                description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="runs/NAME: the run folder the trainer made")
    p.add_argument("--mode", default="online", choices=["online", "offline"],
                   help="offline writes a run for a later `wandb sync` (default online)")
    p.add_argument("--id", dest="run_id", help="the W&B run id (default: a new one)")
    p.add_argument("--project", help="default: the run's log.project")
    p.add_argument("--entity", help="default: the run's log.entity")
    args = p.parse_args(argv)
    try:
        run_id = upload(args.run_dir, args.mode, args.run_id, args.project, args.entity)
    except (ReportError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"uploaded {args.run_dir} as W&B run {run_id} ({args.mode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
