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
from pipeline.reports.runs import Run, load_run

SAMPLE = re.compile(r"step-(\d+)\.png$")


def upload(run_dir: Path, mode: str = "online", run_id: str | None = None,
           project: str | None = None, entity: str | None = None) -> str:
    """Logs every row and sample grid of `run_dir` to a new W&B run; returns its id."""
    import wandb

    config = _read_config(run_dir)
    log_cfg = config.get("log", {})
    folder = load_run(run_dir)  # the report's reader: metrics, starts, derived values
    starts, derived = folder.starts, folder.derived
    run = wandb.init(project=project or log_cfg.get("project"),
                     entity=entity or log_cfg.get("entity") or None,
                     name=config.get("name", run_dir.name), id=run_id, mode=mode,
                     dir=str(_wandb_dir(run_dir)), tags=list(log_cfg.get("tags", [])),
                     config={**config, "derived": derived,
                             "start": starts[-1] if starts else {}, "starts": len(starts)})
    define_axes(run)
    for row in in_training_order(folder, _samples(run_dir)):
        if isinstance(row, tuple):  # a sample grid: (step, images seen, path)
            step, seen, path = row
            row = {"step": step, "images_seen": seen,
                   "samples/train": wandb.Image(str(path), caption=path.name)}
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


def in_training_order(run: Run, samples: list[tuple[int, Path]]) -> list:
    """Rows and sample grids as they were trained: by images seen (a run resumed in another
    shape numbers its steps two ways); at one point the grid (taken before the step's
    training) first, then the train row, then the val row, as the trainer logs them.
    A grid is (step, images seen, path)."""
    items = [(int(run.images_at(step)), 0, (step, int(run.images_at(step)), path))
             for step, path in samples]
    items += [(row["images_seen"], 2 if "val/top1" in row else 1, row) for row in run.rows]
    return [item for *_, item in sorted(items, key=lambda item: item[:2])]
