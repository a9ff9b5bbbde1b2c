"""runs/<name>/metrics.jsonl: every log point of the run exactly once, across restarts.

    rows = read_rows(path)                              # [{step, ...}, ...]
    sent = rewind(path, images_seen, validated)         # at a resume: rows past it out

A train row holds train/loss, a val row val/top1. A job killed without a save (a node
lost, SIGKILL, a crash) logged rows past its last checkpoint; the resumed job trains
those steps again. At the resume those rows are moved to metrics.dropped.jsonl (kept,
not lost), so metrics.jsonl holds the rows of the steps that led to the weights, each
once. `rewind` returns how far each kind was logged before (W&B has those rows and keeps
them: the tracker does not send them twice).

The clock is `images_seen`, not `step`: a resume on another world size renumbers the
steps (step 38 of 1 rank becomes step 12 of 2), while the images the weights have seen
only grow, and a redone step sees the same count again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.files import AtomicFile

log = logging.getLogger(__name__)
DROPPED = "metrics.dropped.jsonl"


def kind(row: dict) -> str:
    return "val" if "val/top1" in row else "train"


def read_rows(path: Path) -> list[dict]:
    """Every row; a line cut by a kill mid-write (the last one) is left out."""
    if not path.is_file():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number < len(lines):
                raise ValueError(f"{path}:{number}: not a JSON row; metrics.jsonl is written "
                                 "by the trainer only (move the file away to start anew)"
                                 ) from err
            log.warning("%s: the last line was cut off (a kill mid-write); left out", path)
    return rows


@dataclass(frozen=True)
class Logged:
    """The most images seen at a row of each kind logged before this start (-1: none)."""

    train: int = -1
    val: int = -1

    def has(self, row: dict) -> bool:
        return row["images_seen"] <= (self.val if kind(row) == "val" else self.train)


def rewind(path: Path, images_seen: int, validated: bool) -> Logged:
    """Keeps the train rows up to the checkpoint's `images_seen` and the val rows before
    it, and the one at it if the checkpoint was `validated` at its own step."""
    rows = read_rows(path)
    logged = Logged(*(max((r["images_seen"] for r in rows if kind(r) == which), default=-1)
                      for which in ("train", "val")))

    def kept(row: dict) -> bool:
        if kind(row) == "train" or validated:
            return row["images_seen"] <= images_seen
        return row["images_seen"] < images_seen

    keep = [r for r in rows if kept(r)]
    if len(keep) < len(rows) or path.is_file() and not path.read_text().endswith("\n"):
        dropped = [r for r in rows if not kept(r)]
        with open(path.with_name(DROPPED), "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in dropped)
        with AtomicFile(path) as f:
            f.write("".join(json.dumps(r) + "\n" for r in keep).encode())
        if dropped:
            log.warning("metrics.jsonl: %d rows logged after the checkpoint (%d images seen) "
                        "moved to %s; those steps are trained again now", len(dropped),
                        images_seen, DROPPED)
    return logged
