"""A run folder rebuilt as one complete W&B run (the engine of python -m pipeline.upload).

    run_id = upload(Path("runs/NAME"), mode="online", run_id=None, project=None, entity=None)

Reads what the run folder keeps for good (metrics.jsonl: every step once across restarts,
config.yaml, derived.json, starts.jsonl, the sample grids in samples/) and writes W&B's
own files under RUN_DIR/upload/ only.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipeline.monitor.tracker import define_axes
from pipeline.reports.runs import load_run

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
