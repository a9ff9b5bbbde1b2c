"""The numbers of a run's summary: best top-1, targets reached, speed, time lost.

    summary = summarize(run, targets=(0.5, 0.7))       # run: reports.runs.load_run
    write_summary([summary, ...], targets, out)        # out/summary.md

Times. Wall times count from the first start of the job (starts.jsonl, session 0) and
include every restart, so "wall time to 70%" is what a person waited.

Time lost to restarts, measured at log points. For every session s >= 1:
  downtime(s) = start time of s - time of the last row session s-1 logged (kept in
                metrics.jsonl or moved to metrics.dropped.jsonl; its start time if none):
                the job was dead, queued or starting up;
and for every session: redone = time of its last dropped row - time of its last row
  kept before the first dropped one (its start time if none was kept): steps trained
  after the last checkpoint, lost in the crash and trained again.
The loss is the sum of both; it equals, over s >= 1, start(s) - the last kept row of s-1.
A failure (failures.jsonl) costs the time from the last row still kept before it (or
the start it happened in) to the first start after it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.monitor.progress import duration
from pipeline.reports.runs import Run


@dataclass(frozen=True)
class Restarts:
    downtime_s: float  # dead, queued or starting up between sessions
    redone_s: float  # training lost in crashes (metrics.dropped.jsonl) and done again

    @property
    def lost_s(self) -> float:
        return self.downtime_s + self.redone_s


def restart_time(run: Run) -> Restarts:
    """The time lost to restarts (the module docstring has the definition)."""
    starts = {s["session"]: s["time"] for s in run.starts}
    downtime = redone = 0.0
    for session in sorted(starts):
        kept = [r["time"] for r in run.rows if r["session"] == session]
        lost = [r["time"] for r in run.dropped if r["session"] == session]
        if lost:
            before = [t for t in kept if t <= min(lost)]
            redone += max(lost) - max(before, default=starts[session])
        if session - 1 in starts:
            logged = [r["time"] for r in run.rows + run.dropped if r["session"] == session - 1]
            downtime += starts[session] - max(logged, default=starts[session - 1])
    return Restarts(downtime, redone)


def failure_lost_s(run: Run, fault: float, until: float = math.inf) -> float | None:
    """From the last row still kept before the fault (or the start it happened in) to the
    next start: the steps redone and the time the job was down; None when no start
    followed before `until` (the next failure's time, which then counts the loss)."""
    after = [s["time"] for s in run.starts if s["time"] > fault]
    if not after or min(after) > until:
        return None
    anchor = max([r["time"] for r in run.rows if r["time"] <= fault]
                 + [s["time"] for s in run.starts if s["time"] <= fault], default=fault)
    return min(after) - anchor


def failure_rows(run: Run) -> list[list[str]]:
    """One row per failure: when, step, who, status, what was done, the time it cost
    (failure_lost_s; "-" when no start followed, or a later failure came first)."""
    rows = []
    for i, f in enumerate(run.failures):
        fault = f.get("first_ending") or f["time"]
        later = run.failures[i + 1]["time"] if i + 1 < len(run.failures) else math.inf
        lost = failure_lost_s(run, fault, until=later)
        culprits = f.get("culprits") or []
        who = "; ".join(f"rank {c['rank']} on {c['host']}: {c['what']}" for c in culprits[:2])
        who = (who + (f"; {len(culprits) - 2} more" if len(culprits) > 2 else "")
               or "no rank to blame: every rank saw a peer fail")
        status = str(f.get("status")) + (f" ({f['signal']})" if f.get("signal") else "")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(fault))
        rows.append([run.label, when, str(f.get("step") or "-"), who, status, f["action"],
                     "-" if lost is None else duration(lost)])
    return rows


@dataclass(frozen=True)
class Reached:
    """The first val row at or above a top-1 (the best one for `best`)."""

    top1: float
    step: int
    images_seen: int
    wall_s: float


def reached(run: Run, target: float) -> Reached | None:
    row = next((r for r in run.val if r["val/top1"] >= target), None)
    return None if row is None else _reached(run, row)


def _reached(run: Run, row: dict) -> Reached:
    return Reached(row["val/top1"], row["step"], row["images_seen"], row["time"] - run.started)


@dataclass(frozen=True)
class Summary:
    label: str
    world_size: str  # "8", or "1 -> 2" for a run resumed in another shape
    global_batch: str
    steps_done: int  # the last row's step, in the run's current numbering
    total_steps: int | None
    best: Reached | None  # the highest val top-1, its first occurrence
    targets: dict[float, Reached | None]
    mean_images_per_s: float  # mean over the train rows
    starts: int
    restarts: Restarts
    wall_s: float  # the first start to the last row logged


def summarize(run: Run, targets: Sequence[float] = ()) -> Summary:
    val, train = run.val, run.train
    best = max(val, key=lambda r: r["val/top1"], default=None)  # max keeps the first
    speeds = [r["images_per_s"] for r in train if "images_per_s" in r]
    last = max(r["time"] for r in run.rows + run.dropped)
    shapes = run.shapes() or [(run.world_size, run.global_batch)]
    return Summary(run.label, " -> ".join(str(w or "?") for w, _ in shapes),
                   " -> ".join(str(b or "?") for _, b in shapes),
                   run.rows[-1]["step"], run.derived.get("total_steps"),
                   None if best is None else _reached(run, best),
                   {t: reached(run, t) for t in targets},
                   sum(speeds) / len(speeds) if speeds else math.nan,
                   len(run.starts), restart_time(run), last - run.started)


def summary_table(summaries: Sequence[Summary], targets: Sequence[float] = ()) -> str:
    head = ["run", "world size", "global batch", "steps done", "best val top-1",
            "best at step", "best at images seen", "best at wall time",
            *(f"top-1 >= {t:.0%}: step, wall time" for t in targets),
            "mean images/s", "starts", "time lost to restarts", "total wall time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        lines.append("| " + " | ".join(_cells(s, targets)) + " |")
    return "\n".join(lines) + "\n"


def _cells(s: Summary, targets: Sequence[float]) -> list[str]:
    b = s.best
    best = ["-"] * 4 if b is None else [f"{b.top1:.2%}", str(b.step), f"{b.images_seen:,}",
                                        duration(b.wall_s)]
    reach = [f"step {r.step}, {duration(r.wall_s)}" if r else "not reached"
             for r in (s.targets.get(t) for t in targets)]
    steps = f"{s.steps_done}" + (f" of {s.total_steps}" if s.total_steps else "")
    return [s.label, s.world_size, s.global_batch, steps, *best, *reach,
            f"{s.mean_images_per_s:.1f}", str(s.starts), duration(s.restarts.lost_s),
            duration(s.wall_s)]


NOTES = """
Wall times count from the job's first start and include restarts. Time lost to restarts:
for each restart, the time from the last row the previous session logged to the new
start (dead, queued, starting up), plus the time the rows in metrics.dropped.jsonl cover
(steps trained after the last checkpoint, lost in a crash, trained again). Mean images/s:
the mean of the train rows' images_per_s. Top-1 values are the val rows' val/top1.
"""


FAILURES_NOTES = """
From failures.jsonl, written by slurm/train_64gpu.sh after every failed step: when the
first rank ended, the last step a rank reported, the ranks that caused it (died without
a word, failed by themselves or froze; not the ranks that only saw a peer fail), srun's
status, what the job did (restart, exclude: restart without that node, stop), and the
time it cost: from the last row still kept before it (steps after it were trained again)
or the start it happened in, to the next start.
"""


def failures_table(rows: Sequence[list[str]]) -> str:
    head = ["run", "when (UTC)", "step", "caused by", "status", "action", "time lost"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_summary(summaries: Sequence[Summary], targets: Sequence[float], out: Path,
                  failures: Sequence[list[str]] = ()) -> Path:
    path = out / "summary.md"
    text = "# Run summary\n\n" + summary_table(summaries, targets) + NOTES
    if failures:
        text += "\n## Failures\n\n" + failures_table(failures) + FAILURES_NOTES
    path.write_text(text)
    return path
