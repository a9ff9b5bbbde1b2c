"""python -m pipeline.report on two short real runs (one killed after a checkpoint and
resumed): readable PNGs, plots.json holding metrics.jsonl's numbers exactly, the summary;
the restart-time maths on a hand-written run folder; a folder without metrics.jsonl."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from run_helpers import launch

from pipeline import report as cli
from pipeline.monitor.history import read_rows
from pipeline.reports.plots import FIGURES, write_plots
from pipeline.reports.runs import load_run
from pipeline.reports.summary import restart_time, summarize

PNGS = [spec.file for spec in FIGURES]
TARGETS = (0.5, 1.0)


def wait_for_step(metrics: Path, step: int, job, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(r["step"] >= step for r in read_rows(metrics)):
        assert all(p.poll() is None for p in job.processes), job.text()
        assert time.monotonic() < deadline, f"no row of step {step} in {timeout} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def runs(sample_shards, tmp_path_factory) -> list[Path]:
    """40 steps (1.6 epochs of 25; val at 25 and 40) at two learning rates; the second run
    is SIGKILLed after its step-15 row (checkpoint at 10: the row goes to
    metrics.dropped.jsonl) and resumed."""
    root = tmp_path_factory.mktemp("report")
    common = [f"data.shards={sample_shards}", f"runs_dir={root}", "data.image_size=32",
              "schedule.epochs=1.6", "eval.precise_bn_batches=4",
              "checkpoint.every_steps=10"]
    resumed = [*common, "name=resumed", "optim.base_lr=0.1"]
    jobs = [launch([*common, "name=steady", "optim.base_lr=0.4"], 1, root / "logs"),
            launch(resumed, 1, root / "logs")]
    try:
        wait_for_step(root / "resumed" / "metrics.jsonl", 15, jobs[1])
        jobs[1].signal(0, signal.SIGKILL)
        assert jobs[1].wait() == [-signal.SIGKILL]
        jobs.append(launch(resumed, 1, root / "logs"))
        assert jobs[2].wait() == [0], jobs[2].text()
        assert jobs[0].wait() == [0], jobs[0].text()
    finally:
        for job in jobs:
            job.kill()
    return [root / "steady", root / "resumed"]


@pytest.fixture(scope="module")
def out(runs) -> Path:
    """The report of both runs, by the real command, into ./report of its folder."""
    folder = runs[0].parent
    done = subprocess.run([sys.executable, "-m", "pipeline.report", *map(str, runs),
                           "--target", *map(str, TARGETS)], cwd=folder, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return folder / "report"


def test_the_pngs_are_images_a_person_can_read(out, runs):
    assert cli.main([str(runs[1])]) == 0  # one run: its own report/ folder
    for path in [out / name for name in PNGS] + [runs[1] / "report" / name for name in PNGS]:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 800 and image.height >= 400, path


def test_plots_json_holds_the_numbers_of_metrics_jsonl_exactly(out, runs):
    figures = {f["file"]: f for f in json.loads((out / "plots.json").read_text())["figures"]}
    assert sorted(figures) == sorted(PNGS)
    rows = {run.name: read_rows(run / "metrics.jsonl") for run in runs}
    lines = [(f, axes, line) for f in figures.values() for axes in f["axes"]
             for line in axes["lines"]]
    for _, _, line in lines:  # every line drawn is the run's rows that have the key
        have = [r for r in rows[line["run"]] if line["y_key"] in r]
        assert line["x"] == [r[line["x_key"]] for r in have]
        assert line["y"] == [r[line["y_key"]] for r in have]
    for name in rows:
        drawn = {(f["file"], a["title"], line["x_key"], line["y_key"])
                 for f, a, line in lines if line["run"] == name}
        assert {("curves_vs_step.png", "train loss", "step", "train/loss"),
                ("val_top1.png", "val top-1 (single crop)", "step", "val/top1"),
                ("curves_vs_images.png", "top-1: train and val", "images_seen", "val/top1"),
                ("ranks.png", "wall time per step", "step", "ranks/step_time_s_max"),
                } <= drawn
        assert [r["step"] for r in rows[name] if "val/top1" in r] == [25, 40]
    restart = json.loads((runs[1] / "starts.jsonl").read_text().splitlines()[1])
    step_axes = figures["curves_vs_step.png"]["axes"][0]
    assert step_axes["markers"] == [{"restart": 1, "run": "resumed", "x": "step",
                                     "at": restart["step"]}]


def test_the_summary_has_the_best_top1_and_the_time_lost_to_the_restart(out, runs):
    text = (out / "summary.md").read_text()
    for run in runs:
        rows = read_rows(run / "metrics.jsonl")
        val = [r for r in rows if "val/top1" in r]
        best = max(val, key=lambda r: r["val/top1"])
        summary = summarize(load_run(run), TARGETS)
        assert (summary.best.top1, summary.best.step) == (best["val/top1"], best["step"])
        row = next(line for line in text.splitlines() if line.startswith(f"| {run.name} |"))
        assert f"| {best['val/top1']:.2%} | {best['step']} |" in row
        for target in TARGETS:  # the first val row at or above it, or none
            first = next((r for r in val if r["val/top1"] >= target), None)
            reached = summary.targets[target]
            assert (reached and reached.step) == (first and first["step"])
            assert (f"| step {first['step']}, " if first else "| not reached |") in row
    steady, resumed = (restart_time(load_run(run)) for run in runs)
    assert steady.lost_s == 0
    dropped = read_rows(runs[1] / "metrics.dropped.jsonl")
    assert dropped and {r["session"] for r in dropped} == {0}  # the kill lost step 15
    start = read_rows(runs[1] / "starts.jsonl")[1]["time"]
    kept = max(r["time"] for r in read_rows(runs[1] / "metrics.jsonl") if r["session"] == 0)
    assert resumed.lost_s == pytest.approx(start - kept) and resumed.redone_s > 0


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_time_lost_to_restarts_is_the_downtime_plus_the_dropped_steps(tmp_path):
    """Session 0 logs steps 5, 10 (checkpoint at 10) and 15, 20, dies; session 1 starts
    from step 10 at t=1100: 1100-1045 s down, 1045-1020 s of steps trained again."""
    def train(step, t, session):
        return {"step": step, "epoch": step / 25, "images_seen": 16 * step, "time": t,
                "session": session, "train/loss": 2.0, "images_per_s": float(step)}
    write_rows(tmp_path / "starts.jsonl", [{"session": 0, "step": 0, "time": 1000.0},
                                           {"session": 1, "step": 10, "time": 1100.0}])
    write_rows(tmp_path / "metrics.jsonl", [
        train(5, 1010.0, 0), train(10, 1020.0, 0), train(15, 1110.0, 1),
        train(20, 1120.0, 1), {**train(20, 1125.0, 1), "val/top1": 0.625}])
    write_rows(tmp_path / "metrics.dropped.jsonl", [train(15, 1030.0, 0), train(20, 1045.0, 0)])
    run = load_run(tmp_path)
    lost = restart_time(run)
    assert (lost.downtime_s, lost.redone_s, lost.lost_s) == (55.0, 25.0, 80.0)
    summary = summarize(run, (0.5, 0.7))
    assert (summary.wall_s, summary.starts, summary.steps_done) == (125.0, 2, 20)
    assert summary.mean_images_per_s == (5 + 10 + 15 + 20) / 4
    assert summary.best.wall_s == 125.0 and summary.targets[0.7] is None
    assert summary.label == tmp_path.name  # no config.yaml: the folder's name
    assert (tmp_path / "report" / "plots.json") in write_plots([run], tmp_path / "report")


@pytest.mark.parametrize("folder", ["empty", "missing"])
def test_a_folder_without_metrics_is_one_line_that_says_what_to_give(tmp_path, folder,
                                                                     capsys):
    path = tmp_path / folder
    if folder == "empty":
        path.mkdir()
    assert cli.main([str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
    assert "give a run folder" in err and not (tmp_path / "out").exists()

