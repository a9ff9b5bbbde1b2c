"""What the MNIST experiment (pipeline/paper/mnist.py) writes: figures, numbers, a table.

    paths = write_outputs(out, settings, data, curves)   # the PNGs, mnist.json, mnist.md
    summary = summarize(curves, settings)                 # the table's numbers per net
    claims(summary)                                       # [(claim, ours, verdict)]

`curves` maps "without_bn" and "with_bn" to the recorded lists (mnist.CURVE_KEYS).
Figures are drawn on the Agg canvas without pyplot: no display, no global state.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from pipeline.paper.mnist import Settings, record_steps
from pipeline.paper.mnist_data import Data

LABELS = {"without_bn": "without BN", "with_bn": "with BN"}
COLORS = {"without_bn": "C3", "with_bn": "C0"}
STEP_LABEL = "training step (mini-batches of 60)"


def first_step_at(curve: dict[str, list], accuracy: float) -> int | None:
    """The first recorded step whose test accuracy is at least `accuracy`."""
    return next((step for step, acc in zip(curve["step"], curve["test_accuracy"], strict=True)
                 if acc >= accuracy), None)


def summarize(curves: dict[str, dict[str, list]], s: Settings) -> dict[str, dict]:
    plain_final = curves["without_bn"]["test_accuracy"][-1]
    summary = {}
    for name, c in curves.items():
        best = max(range(len(c["step"])), key=lambda i: c["test_accuracy"][i])
        summary[name] = {
            "final_accuracy": c["test_accuracy"][-1],
            "best_accuracy": c["test_accuracy"][best], "best_step": c["step"][best],
            "steps_to_target": first_step_at(c, s.target),
            "steps_to_no_bn_final": first_step_at(c, plain_final),
            "median_start": c["p50"][0], "median_end": c["p50"][-1],
            "median_range": max(c["p50"]) - min(c["p50"]),
            "width_start": c["p85"][0] - c["p15"][0], "width_end": c["p85"][-1] - c["p15"][-1],
        }
    return summary


def claims(summary: dict[str, dict], target: float) -> list[tuple[str, str, str]]:
    """(the paper's claim, our numbers, verdict) for each claim of Section 4.1."""
    plain, bn = summary["without_bn"], summary["with_bn"]

    def steps(net: dict) -> float:
        return math.inf if net["steps_to_target"] is None else net["steps_to_target"]

    found = [
        ("With BN the net trains faster (fewer steps to the target)",
         f"to {target:.0%}: {_steps(bn['steps_to_target'])} with BN, "
         f"{_steps(plain['steps_to_target'])} without", steps(bn) < steps(plain)),
        ("With BN it reaches a higher test accuracy",
         f"final {bn['final_accuracy']:.2%} with BN, {plain['final_accuracy']:.2%} without",
         bn["final_accuracy"] > plain["final_accuracy"]),
        ("With BN the sigmoid's input distribution stays stable; without, it drifts",
         f"median's range over training {bn['median_range']:.2f} with BN, "
         f"{plain['median_range']:.2f} without", bn["median_range"] < plain["median_range"]),
    ]
    return [(claim, ours, "holds" if ok else "does not hold at this scale")
            for claim, ours, ok in found]


def _steps(step: int | None) -> str:
    return "not reached" if step is None else f"{step:,}"


def draw_accuracy(curves: dict[str, dict[str, list]], data: Data, s: Settings) -> Figure:
    fig = Figure(figsize=(11, 4.6), layout="constrained", dpi=110)
    fig.suptitle(f"Test accuracy with and without BN (the BN paper's Figure 1a): {data.name}")
    full, zoom = fig.subplots(1, 2)
    for name, c in curves.items():
        for ax in (full, zoom):
            ax.plot(c["step"], c["test_accuracy"], color=COLORS[name], label=LABELS[name],
                    linewidth=1.6)
    finals = [c["test_accuracy"][-1] for c in curves.values()]
    low = max(0.0, min(finals) - 0.05)
    zoom.set_ylim(low, 1.0)
    full.set(title="whole range", ylim=(0, 1.0))
    zoom.set(title=f"zoomed on {low:.0%}-100%")
    for ax in (full, zoom):
        ax.set(xlabel=STEP_LABEL, ylabel=f"test accuracy ({len(data.test.y):,} images)")
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        ax.axhline(s.target, color="0.5", linestyle="-.", linewidth=0.9)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
    full.annotate(f"target {s.target:.0%}", (0.99, s.target), xycoords=("axes fraction", "data"),
                  xytext=(0, -11), textcoords="offset points", ha="right", fontsize="small",
                  color="0.35")
    return fig


def draw_sigmoid_inputs(curves: dict[str, dict[str, list]], data: Data, s: Settings) -> Figure:
    fig = Figure(figsize=(11, 4.6), layout="constrained", dpi=110)
    fig.suptitle(f"Input to the sigmoid of unit {s.unit} of the last hidden layer, over the "
                 f"{len(data.test.y):,} test images (the BN paper's Figure 1b, c)")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (name, c), panel in zip(axes, curves.items(), "bc", strict=True):
        color = COLORS[name]
        ax.fill_between(c["step"], c["p15"], c["p85"], color=color, alpha=0.15, linewidth=0)
        ax.plot(c["step"], c["p85"], color=color, linestyle="--", label="85th percentile")
        ax.plot(c["step"], c["p50"], color=color, linewidth=2, label="median (50th)")
        ax.plot(c["step"], c["p15"], color=color, linestyle=":", linewidth=1.6,
                label="15th percentile")
        ax.set(title=f"({panel}) {LABELS[name]}", xlabel=STEP_LABEL)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
    axes[0].set_ylabel("sigmoid input, BN(Wu) or Wu + b (no unit)")
    return fig


def write_table(out: Path, summary: dict, verdicts, data: Data, s: Settings) -> Path:
    plain, bn = summary["without_bn"], summary["with_bn"]

    def row(label: str, key: str, fmt: str) -> str:
        cells = [_steps(n[key]) if fmt == "steps" else format(n[key], fmt) for n in (plain, bn)]
        return f"| {label} | {cells[0]} | {cells[1]} |"

    lines = [f"# BN paper, Section 4.1, at small scale: {data.name}, {s.steps:,} steps of "
             f"{s.batch}\n",
             f"{len(data.train.y):,} train and {len(data.test.y):,} test images; 3 x 100 "
             f"sigmoid units; weights N(0, {s.init_std}), plain SGD at lr {s.lr}, seed "
             f"{s.seed}; recorded every {s.every:,} steps (steps below are recorded steps).\n",
             "| | without BN | with BN |", "|---|---|---|",
             row(f"final test accuracy (step {s.steps:,})", "final_accuracy", ".2%"),
             row("best test accuracy", "best_accuracy", ".2%"),
             row("step of the best", "best_step", "steps"),
             row(f"steps to {s.target:.0%} test accuracy", "steps_to_target", "steps"),
             row(f"steps to the no-BN net's final {plain['final_accuracy']:.2%}",
                 "steps_to_no_bn_final", "steps"),
             row(f"sigmoid input of unit {s.unit}: median at step 0", "median_start", ".2f"),
             row(f"median at step {s.steps:,}", "median_end", ".2f"),
             row("median's range over training (max - min): the drift", "median_range", ".2f"),
             row("15th-85th percentile width at step 0", "width_start", ".2f"),
             row(f"15th-85th percentile width at step {s.steps:,}", "width_end", ".2f"),
             "", "The paper (Figure 1, 50,000 steps on MNIST) shows curves and states no "
             "numbers; its claims beside ours:", "",
             "| the paper's claim | here | verdict |", "|---|---|---|"]
    lines += [f"| {claim} | {ours} | {verdict} |" for claim, ours, verdict in verdicts]
    path = out / "mnist.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_outputs(out: Path, s: Settings, data: Data, curves: dict[str, dict[str, list]]
                  ) -> list[Path]:
    """fig1a_test_accuracy.png, fig1bc_sigmoid_input.png, mnist.json and mnist.md in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for file, draw in (("fig1a_test_accuracy.png", draw_accuracy),
                       ("fig1bc_sigmoid_input.png", draw_sigmoid_inputs)):
        FigureCanvasAgg(draw(curves, data, s)).print_png(out / file)
        paths.append(out / file)
    summary = summarize(curves, s)
    verdicts = claims(summary, s.target)
    described = {"name": data.name, "train_images": len(data.train.y),
                 "test_images": len(data.test.y), "image_shape": list(data.image_shape),
                 "test_split": data.test_split}
    (out / "mnist.json").write_text(json.dumps(
        {"experiment": "BN paper (Ioffe & Szegedy 2015), Section 4.1, Figure 1",
         "data": described, "settings": asdict(s), "record_steps": record_steps(s),
         "curves": curves, "summary": summary,
         "claims": [dict(zip(("claim", "here", "verdict"), v, strict=True)) for v in verdicts]},
        indent=1) + "\n")
    paths.append(out / "mnist.json")
    paths.append(write_table(out, summary, verdicts, data, s))
    return paths
