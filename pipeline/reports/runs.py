"""A run folder read back: the one reader of what the trainer wrote, for every report.

    run = load_run(Path("runs/bn_inception_64"))      # ReportError when it has no rows
    run.series("step", "val/top1")                     # ([25, 50, ...], [0.41, 0.52, ...])
    runs = load_runs([path, ...])                      # labelled apart when names repeat

Only what the trainer and the job script write is read: metrics.jsonl (train and val
rows), starts.jsonl, metrics.dropped.jsonl, failures.jsonl, config.yaml (`name`) and
derived.json (world size, global batch).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.dist.recovery import FAILURES
from pipeline.monitor.history import DROPPED, kind, read_rows


class ReportError(Exception):
    """A run folder the report cannot use; the message says what to do."""


@dataclass(frozen=True)
class Run:
    path: Path
    label: str  # the run's name (config.yaml), made unique among the runs of one report
    derived: dict  # derived.json ({} when missing)
    rows: list[dict]  # metrics.jsonl: train and val rows in logged order
    starts: list[dict]  # starts.jsonl: one per start of the job
    dropped: list[dict] = field(default_factory=list)  # metrics.dropped.jsonl
    failures: list[dict] = field(default_factory=list)  # failures.jsonl (the job script's)

    @property
    def train(self) -> list[dict]:
        return [r for r in self.rows if kind(r) == "train"]

    @property
    def val(self) -> list[dict]:
        return [r for r in self.rows if kind(r) == "val"]

    @property
    def world_size(self) -> int | None:
        return self.derived.get("world_size")

    @property
    def global_batch(self) -> int | None:
        return self.derived.get("global_batch")

    @property
    def started(self) -> float:
        """Unix time of the job's first start."""
        return self.starts[0]["time"] if self.starts else self.rows[0]["time"]

    @property
    def reshaped(self) -> bool:
        """Resumed in another shape (world size, batch): its steps count two ways, so it is
        ordered and drawn by images seen."""
        steps = [r["step"] for r in self.train]
        return any(b < a for a, b in zip(steps, steps[1:], strict=False)) or \
            len(self.shapes()) > 1

    def shapes(self) -> list[tuple[int, int]]:
        """(world size, global batch) of each start that recorded it, changes only."""
        found = []
        for start in self.starts:
            shape = (start.get("world_size"), start.get("global_batch"))
            if None not in shape and (not found or found[-1] != shape):
                found.append(shape)
        return found

    def series(self, x_key: str, y_key: str) -> tuple[list, list]:
        """x and y of every row that has `y_key`, in logged order."""
        rows = [r for r in self.rows if y_key in r and x_key in r]
        return [r[x_key] for r in rows], [r[y_key] for r in rows]

    def restarts(self) -> list[dict]:
        """The starts after the first: a resume, a requeue, a restart after a crash."""
        return [s for s in self.starts if s["session"] > 0]

    def images_at(self, step: int) -> float:
        """Images seen after `step` steps of the run's current numbering, interpolated
        between log points."""
        rows = self._current_numbering()
        known = sorted({*((r["step"], r["images_seen"]) for r in rows),
                        *(() if self.reshaped else ((0, 0),))})
        batch = self.global_batch or 0
        if not known:
            return step * batch
        below = [(s, i) for s, i in known if s <= step]
        if not below:  # before the first row of a reshaped run's numbering
            return known[0][1] - (known[0][0] - step) * batch
        below = below[-1]
        above = next(((s, i) for s, i in known if s > step), None)
        if above is None:
            return below[1] + (step - below[0]) * batch
        return below[1] + (step - below[0]) * (above[1] - below[1]) / (above[0] - below[0])

    def _current_numbering(self) -> list[dict]:
        """The train rows since the last change of shape (where the steps went back)."""
        train = self.train
        cut = max((i + 1 for i in range(len(train) - 1)
                   if train[i + 1]["step"] < train[i]["step"]), default=0)
        return train[cut:]


def load_run(path: Path) -> Run:
    metrics = path / "metrics.jsonl"
    if not path.is_dir():
        raise ReportError(f"{path}: no such folder; give a run folder (runs/<name>/)")
    if not metrics.is_file():
        raise ReportError(f"{metrics} not found: give a run folder that python -m "
                          "pipeline.train wrote into (runs/<name>/, with metrics.jsonl)")
    try:
        rows = read_rows(metrics)
        dropped = read_rows(path / DROPPED)
    except ValueError as err:
        raise ReportError(str(err)) from None
    if not rows:
        raise ReportError(f"{metrics} has no rows yet: the first is written at step "
                          "log.every_steps; run the report again after it")
    return Run(path, _name(path), _read_json(path / "derived.json"), rows,
               _starts(path, rows), dropped, read_rows(path / FAILURES))


def load_runs(paths: Sequence[Path]) -> list[Run]:
    """Every run, labelled by its name; runs of one name by name and folder (and by their
    place on the command line when the folder repeats too)."""
    runs = [load_run(p) for p in paths]
    names = Counter(r.label for r in runs)
    labels = [f"{r.label} ({r.path})" if names[r.label] > 1 else r.label for r in runs]
    repeated = Counter(labels)
    labels = [f"{label} #{i}" if repeated[label] > 1 else label
              for i, label in enumerate(labels, 1)]
    return [replace(r, label=label) for r, label in zip(runs, labels, strict=True)]


def _name(path: Path) -> str:
    config = path / "config.yaml"
    name = OmegaConf.load(config).get("name") if config.is_file() else None
    return str(name or path.resolve().name)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _starts(path: Path, rows: list[dict]) -> list[dict]:
    """starts.jsonl; without it (an older run), each session's first row stands in."""
    starts = read_rows(path / "starts.jsonl")
    if starts:
        return starts
    first: dict[int, dict] = {}
    for r in rows:
        first.setdefault(r["session"], {"session": r["session"], "step": r["step"],
                                        "time": r["time"]})
    return sorted(first.values(), key=lambda s: s["session"])


