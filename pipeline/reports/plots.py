"""The report's figures: several runs on the same axes, one colour per run.

    paths = write_plots(runs, out, targets=(0.5,))   # out/*.png and out/plots.json
    fig = draw(runs, VAL_TOP1)                       # one figure (matplotlib Figure)
    describe(fig)                                    # what was drawn, read back from it

Each figure is a FigureSpec: panels of series (metrics.jsonl keys) against one x key.
Lines carry their run, x key and y key in their gid, so plots.json is read back from the
drawn Line2D objects: it holds exactly what is on the image. Restarts (a session change)
are dotted vertical lines in the run's colour; val top-1 targets are grey lines.
Figures are drawn on the Agg canvas, without pyplot: no display, no global state.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, MaxNLocator, PercentFormatter

from pipeline.reports.runs import Run

# How a series of each kind is drawn: train rows every few steps, val rows per epoch.
STYLES = {
    "train": {"linestyle": "--", "linewidth": 1.2},
    "val": {"linestyle": "-", "linewidth": 1.8, "marker": "o", "markersize": 3.5},
    "points": {"linestyle": "-", "linewidth": 1.0, "marker": "s", "markersize": 4},
    "median": {"linestyle": "-", "linewidth": 1.6},
    "spread": {"linestyle": "-", "linewidth": 0.6, "alpha": 0.6},
    "rank": {"linestyle": "none", "marker": "o", "markersize": 3},
}
KEYS = {  # the figure legend's line styles, when a figure mixes kinds
    "train": "dashed: train rows", "val": "solid with dots: val rows",
    "median": "line: median over ranks, band: min to max",
}
X_LABELS = {"step": "optimizer step", "images_seen": "images seen (all ranks)",
            "epoch": "epoch"}


@dataclass(frozen=True)
class Series:
    y_key: str  # a metrics.jsonl key
    kind: str  # a STYLES key


@dataclass(frozen=True)
class Panel:
    title: str
    ylabel: str  # with the unit
    series: tuple[Series, ...]
    percent: bool = False  # fractions shown as %


@dataclass(frozen=True)
class FigureSpec:
    file: str
    title: str
    x_key: str
    panels: tuple[Panel, ...]
    columns: int
    panel_size: tuple[float, float] = (5.2, 3.6)  # inches


def _spread(key: str) -> tuple[Series, ...]:
    return (Series(f"{key}_min", "spread"), Series(f"{key}_median", "median"),
            Series(f"{key}_max", "spread"))


LOSS = Panel("train loss", "cross-entropy (nats)", (Series("train/loss", "train"),))
VAL_LOSS = Panel("val loss", "cross-entropy (nats)", (Series("val/loss", "val"),))
TOP1 = Panel("top-1: train and val", "top-1 accuracy",
             (Series("train/top1", "train"), Series("val/top1", "val")), percent=True)
TOP5 = Panel("val top-5", "top-5 accuracy", (Series("val/top5", "val"),), percent=True)
VAL_TOP1 = FigureSpec(
    "val_top1.png", "Validation accuracy against training steps (as in the BN paper, Fig. 2)",
    "step", (Panel("val top-1 (single crop)", "top-1 accuracy", (Series("val/top1", "val"),),
                   percent=True),), columns=1, panel_size=(9, 5.5))
FIGURES = (
    VAL_TOP1,
    FigureSpec("curves_vs_step.png", "Training curves against optimizer steps", "step",
               (LOSS, VAL_LOSS, TOP1, TOP5,
                Panel("learning rate", "lr (of the last step logged)", (Series("lr", "train"),)),
                Panel("gradient norm", "global L2 norm", (Series("grad_norm", "train"),))),
               columns=3),
    FigureSpec("curves_vs_images.png",
               "Training curves against images seen (compares world sizes)", "images_seen",
               (LOSS, VAL_LOSS, TOP1, TOP5), columns=2),
    FigureSpec("throughput.png", "Throughput", "step", (
        Panel("images/s, all ranks", "images/s", (Series("images_per_s", "train"),)),
        Panel("images/s per GPU", "images/s", (Series("images_per_s_per_gpu", "train"),)),
        Panel("wall time per step", "seconds", (Series("step_time_s", "train"),)),
        Panel("time waiting for data", "fraction of wall time",
              (Series("data_wait_fraction", "train"),), percent=True),
        Panel("time per epoch", "seconds", (Series("epoch_time_s", "points"),)),
        Panel("peak GPU memory (largest rank)", "GiB", (Series("gpu_mem_peak_gb", "train"),)),
    ), columns=3),
    FigureSpec("ranks.png", "Spread over ranks (the slowest rank holds the others up)", "step", (
        Panel("wall time per step", "seconds per step", _spread("ranks/step_time_s")),
        Panel("data wait per step", "seconds per step", _spread("ranks/data_wait_s")),
        Panel("slowest rank (longest data wait)", "rank", (Series("ranks/slowest", "rank"),)),
    ), columns=3),
)


def write_plots(runs: Sequence[Run], out: Path, targets: Sequence[float] = (),
                specs: Sequence[FigureSpec] = FIGURES) -> list[Path]:
    """The PNG of every spec and plots.json (what each holds) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths, described = [], []
    for spec in specs:
        fig = draw(runs, spec, targets)
        FigureCanvasAgg(fig).print_png(out / spec.file)
        paths.append(out / spec.file)
        described.append({"file": spec.file, **describe(fig)})
    (out / "plots.json").write_text(json.dumps({"figures": described}, indent=1) + "\n")
    return [*paths, out / "plots.json"]


def draw(runs: Sequence[Run], spec: FigureSpec, targets: Sequence[float] = ()) -> Figure:
    rows = -(-len(spec.panels) // spec.columns)
    width, height = spec.panel_size
    fig = Figure(figsize=(width * spec.columns, height * rows + 0.3 * len(runs) + 0.6),
                 layout="constrained", dpi=110)
    x_key, title = spec.x_key, spec.title
    if x_key == "step" and any(run.reshaped for run in runs):
        x_key, title = "images_seen", f"{title} (by images seen: a run changed shape, so " \
            "its steps count two ways)"
    fig.suptitle(title, fontsize="x-large")
    axes = fig.subplots(rows, spec.columns, squeeze=False).ravel()
    for ax, panel in zip(axes, spec.panels, strict=False):
        _draw_panel(ax, runs, panel, x_key, targets)
    for ax in axes[len(spec.panels):]:
        ax.set_visible(False)
    _legend(fig, runs, spec)
    return fig


def _draw_panel(ax, runs: Sequence[Run], panel: Panel, x_key: str,
                targets: Sequence[float]) -> None:
    ax.set(title=panel.title, xlabel=X_LABELS.get(x_key, x_key), ylabel=panel.ylabel)
    drawn = 0
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        for s in panel.series:
            x, y = run.series(x_key, s.y_key)
            if x:
                ax.plot(x, y, color=color, gid=_gid(run=run.label, x=x_key, y=s.y_key),
                        **STYLES[s.kind])
                drawn += 1
        if any(s.kind == "median" for s in panel.series):
            _band(ax, run, panel, x_key, color)
        if any(run.series(x_key, s.y_key)[0] for s in panel.series):
            _mark_restarts(ax, run, x_key, color)
    if drawn and any(s.y_key == "val/top1" for s in panel.series):
        _mark_targets(ax, targets)
    _format(ax, panel, x_key, drawn, runs)


def _band(ax, run: Run, panel: Panel, x_key: str, color: str) -> None:
    low = next(s for s in panel.series if s.y_key.endswith("_min"))
    high = next(s for s in panel.series if s.y_key.endswith("_max"))
    x, y_low = run.series(x_key, low.y_key)
    if x and run.series(x_key, high.y_key)[0] == x:
        ax.fill_between(x, y_low, run.series(x_key, high.y_key)[1], color=color, alpha=0.2,
                        linewidth=0)


def _mark_restarts(ax, run: Run, x_key: str, color: str) -> None:
    for start in run.restarts():
        step = start["step"]
        per_epoch = start.get("steps_per_epoch") or run.derived.get("steps_per_epoch", 1)
        x = {"step": step, "images_seen": start.get("images_seen", run.images_at(step)),
             "epoch": step / per_epoch}[x_key]
        ax.axvline(x, color=color, linestyle=":", linewidth=1.4, alpha=0.9,
                   gid=_gid(restart=start["session"], run=run.label, x=x_key))


def _mark_targets(ax, targets: Sequence[float]) -> None:
    for t in targets:
        ax.axhline(t, color="0.45", linestyle="-.", linewidth=0.9, gid=_gid(target=t))
        ax.annotate(f"target {t:.0%}", (0.01, t), xycoords=("axes fraction", "data"),
                    xytext=(0, 2), textcoords="offset points", fontsize="small", color="0.35")


def _format(ax, panel: Panel, x_key: str, drawn: int, runs: Sequence[Run]) -> None:
    ax.grid(True, alpha=0.3)
    if not drawn:
        ax.set(xticks=[], yticks=[])
        ax.text(0.5, 0.5, "not logged by these runs", transform=ax.transAxes, ha="center",
                va="center", color="0.4")
        return
    if panel.percent:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    if any(s.kind == "rank" for s in panel.series):  # every rank, 0 to world size - 1
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_ylim(-0.5, max(r.world_size or 1 for r in runs) - 0.5)
    if x_key == "images_seen":
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))


def _legend(fig: Figure, runs: Sequence[Run], spec: FigureSpec) -> None:
    """Below the panels: a colour per run in the left columns, the line styles the
    figure mixes in the last one."""
    runs_key = [Line2D([], [], color=f"C{i % 10}", linewidth=2.5, label=_run_label(run))
                for i, run in enumerate(runs)]
    kinds = {s.kind for p in spec.panels for s in p.series}
    styles = [Line2D([], [], color="0.3", label=KEYS[k], **STYLES[k])
              for k in KEYS if k in kinds and (len(kinds) > 1 or k == "median")]
    if any(run.restarts() for run in runs):
        styles.append(Line2D([], [], color="0.3", linestyle=":", label="dotted: restart"))
    columns = max(1, min(len(runs), int(fig.get_figwidth() // 4.5) - bool(styles)))
    rows = max(-(-len(runs) // columns), len(styles))
    columns = -(-len(runs) // rows)  # no empty column when the styles set the height
    blank = Line2D([], [], linestyle="none", label=" ")
    handles = runs_key + [blank] * (rows * columns - len(runs))
    if styles:  # the legend fills column by column
        handles += styles + [blank] * (rows - len(styles))
    fig.legend(handles=handles, loc="outside lower center", frameon=False,
               ncols=columns + bool(styles))


def _run_label(run: Run) -> str:
    shapes = run.shapes() or ([] if run.world_size is None else
                              [(run.world_size, run.global_batch)])
    if not shapes:
        return run.label
    return f"{run.label} (" + ", then ".join(
        f"{'1 rank' if w == 1 else f'{w} ranks'}, global batch {b}" for w, b in shapes) + ")"


def _gid(**meta) -> str:
    return json.dumps(meta)


def describe(fig: Figure) -> dict:
    """Every axes of `fig` (by title) and every line on it, as drawn."""
    axes = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        lines, markers = [], []
        for line in ax.get_lines():
            meta = json.loads(line.get_gid() or "{}")
            x, y = (np.asarray(v).tolist() for v in line.get_data(orig=True))
            if "y" in meta:
                lines.append({"run": meta["run"], "x_key": meta["x"], "y_key": meta["y"],
                              "x": x, "y": y})
            elif meta:
                markers.append({**meta, "at": x[0] if "restart" in meta else y[0]})
        axes.append({"title": ax.get_title(), "xlabel": ax.get_xlabel(),
                     "ylabel": ax.get_ylabel(), "lines": lines, "markers": markers})
    return {"title": fig.get_suptitle(), "axes": axes}
