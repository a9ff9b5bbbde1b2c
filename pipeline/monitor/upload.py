"""Sends a run to W&B from its run folder, as one complete W&B run.

    python -m pipeline.monitor.upload runs/NAME [--mode online|offline] [--id ID]
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
import re
import sys
from pathlib import Path

import yaml

from pipeline.monitor.report import ReportError, load_run
from pipeline.monitor.tracker import define_axes

SAMPLE = re.compile(r"step-(\d+)\.png$")


def upload(run_dir: Path, mode: str = "online", run_id: str | None = None,
           project: str | None = None, entity: str | None = None) -> str:
    """Logs every row and sample grid of `run_dir` to a new W&B run; returns its id."""
    import wandb

    config = _read_config(run_dir)
    log_cfg = config.get("log", {})
    folder = load_run(run_dir)  # the report's reader: metrics, starts, derived values
    starts, derived, rows = folder.starts, folder.derived, folder.rows
    run = wandb.init(project=project or log_cfg.get("project"),
                     entity=entity or log_cfg.get("entity") or None,
                     name=config.get("name", run_dir.name), id=run_id, mode=mode,
                     dir=str(_wandb_dir(run_dir)), tags=list(log_cfg.get("tags", [])),
                     config={**config, "derived": derived,
                             "start": starts[-1] if starts else {}, "starts": len(starts)})
    define_axes(run)
    images_seen = {row["step"]: row["images_seen"] for row in rows}
    for step, row in _in_step_order(rows, _samples(run_dir)):
        if isinstance(row, Path):
            row = {"step": step, "images_seen": images_seen.get(step, 0),
                   "samples/train": wandb.Image(str(row), caption=row.name)}
        run.log(row)
    run.finish()
    return run.id


def _read_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: give the run folder the trainer made "
                                "(runs/NAME, holding config.yaml and metrics.jsonl)")
    return yaml.safe_load(path.read_text())


def _wandb_dir(run_dir: Path) -> Path:
    folder = run_dir / "upload"
    folder.mkdir(exist_ok=True)
    return folder


def _samples(run_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in sorted((run_dir / "samples").glob("step-*.png")):
        match = SAMPLE.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return found


def _in_step_order(rows: list[dict], samples: list[tuple[int, Path]]):
    """Rows and sample grids by step; at one step the grid (taken before the step's
    training) first, then the train row, then the val row, as the trainer logs them."""
    items = [(step, 0, path) for step, path in samples]
    items += [(row["step"], 2 if "val/top1" in row else 1, row) for row in rows]
    for step, _, item in sorted(items, key=lambda item: item[:2]):
        yield step, item


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.monitor.upload",
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
