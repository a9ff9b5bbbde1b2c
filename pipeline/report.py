"""The local run report: figures and a summary table of one or several run folders.

    python -m pipeline.report runs/bn_inception                 # -> runs/bn_inception/report/
    python -m pipeline.report runs/a runs/b --target 0.5 0.7    # -> ./report/
    python -m pipeline.report runs/* --out paper/figures

Reads only the run folders (metrics.jsonl, starts.jsonl, metrics.dropped.jsonl,
config.yaml, derived.json, failures.jsonl); no W&B, no network. Writes val_top1.png
(val top-1 against steps, one line per run, as in the BN paper's Figure 2), curves_vs_step.png,
curves_vs_images.png, throughput.png, ranks.png, plots.json (every plotted value) and
summary.md (pipeline/reports/summary.py defines its columns; a table of the failures and
the time each cost when the job script recorded any).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.reports.plots import write_plots
from pipeline.reports.runs import ReportError, load_runs
from pipeline.reports.summary import (
    failure_rows,
    failures_table,
    summarize,
    summary_table,
    write_summary,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.report",
                                description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run folders written by python -m pipeline.train (runs/<name>/)")
    p.add_argument("--out", type=Path, default=None,
                   help="where to write (default: RUN_DIR/report for one run, ./report for "
                        "several)")
    p.add_argument("--target", type=float, nargs="*", default=[], metavar="TOP1",
                   help="val top-1 fractions to time, e.g. --target 0.5 0.7")
    args = p.parse_args(argv)
    wrong = [t for t in args.target if not 0 < t <= 1]
    if wrong:
        p.error(f"--target {wrong[0]:g}: give val top-1 as a fraction in (0, 1], e.g. 0.5")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runs = load_runs(args.runs)
    except ReportError as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    out = args.out or (args.runs[0] / "report" if len(runs) == 1 else Path("report"))
    summaries = [summarize(run, args.target) for run in runs]
    failures = [row for run in runs for row in failure_rows(run)]
    written = [*write_plots(runs, out, args.target),
               write_summary(summaries, args.target, out, failures)]
    print(summary_table(summaries, args.target))
    if failures:
        print(failures_table(failures))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
