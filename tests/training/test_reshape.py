"""Resuming on another world size: the saved step is carried over through the epochs done,
so the run trains the epochs asked for; DeepSpeed and engine changes are refused."""

from __future__ import annotations

import os

import pytest
from run_helpers import checkpoints, launch

from pipeline.config import load_config
from pipeline.monitor.history import read_rows
from pipeline.reports.plots import FIGURES, describe, draw
from pipeline.reports.runs import load_run
from pipeline.reports.summary import summarize
from pipeline.reports.wandb_run import in_training_order
from pipeline.resolve import resolve
from pipeline.training.outcome import CRASH_EXIT_CODE
from pipeline.training.reshape import ReshapeError, resume_point


def derived(world: int, *overrides: str) -> dict:
    cfg = load_config(None, ["data.shards=/x", "data.batch_size=16", "schedule.epochs=4",
                             *overrides])
    return resolve(cfg, world, 400).as_dict()  # 25 steps per epoch on 1 rank


def test_the_step_is_carried_over_through_the_epochs():
    two = resolve(load_config(None, ["data.shards=/x", "data.batch_size=16",
                                     "schedule.epochs=4"]), 2, 400)
    same = resume_point(derived(2), {"step": 30, "validated_step": 24}, two)
    assert (same.step, same.validated_step, same.restart_epoch, same.note) == (30, 24, None,
                                                                               None)
    boundary = resume_point(derived(1), {"step": 50, "validated_step": 50}, two)
    assert (boundary.step, boundary.validated_step, boundary.restart_epoch) == (24, 24, 2)
    assert "resuming at the start of epoch 2, at step 24 of 48" in boundary.note
    inside = resume_point(derived(1), {"step": 60, "validated_step": 50}, two)
    assert (inside.step, inside.restart_epoch) == (24, 2)
    assert "epoch 2 was 10 of 25 steps in and restarts from its beginning" in inside.note


def test_deepspeed_and_engine_changes_are_refused_with_the_way_out():
    ds = ["dist.engine=deepspeed"]
    two = resolve(load_config(None, ["data.shards=/x", "data.batch_size=16", *ds]), 2, 400)
    with pytest.raises(ReshapeError, match="written by 1 ranks .* resume on 1 ranks"):
        resume_point(derived(1, *ds), {"step": 25}, two)
    with pytest.raises(ReshapeError, match="written by dist.engine = ddp; resume with "
                                           "dist.engine=ddp"):
        resume_point(derived(2), {"step": 25}, two)


def test_one_rank_then_two_trains_the_epochs_asked_for(sample_shards, tmp_path):
    """1.5 epochs on 1 rank (25 steps each, 38 in all), then epochs=2 on 2 ranks (12 each):
    epoch 1 restarts in the new shape and ends at step 24, not at once nor after 3 epochs."""
    args = [f"data.shards={sample_shards}", f"runs_dir={tmp_path}", "name=run",
            "data.image_size=32", "eval.every_epochs=0", "log.every_steps=4"]
    first = launch([*args, "schedule.epochs=1.5"], 1, tmp_path / "logs")
    assert first.wait() == [0], first.text()
    assert checkpoints(tmp_path / "run") == [25, 38]  # round(37.5)

    second = launch([*args, "schedule.epochs=2"], 2, tmp_path / "logs")
    assert second.wait() == [0, 0], second.text()
    log = second.outputs[0].read_text()
    assert "world 1 -> 2, global batch 16 -> 32, 25 -> 12 steps per epoch): epoch 1 was 13 " \
           "of 25 steps in and restarts from its beginning, at step 12 of 24" in log
    assert checkpoints(tmp_path / "run") == [24]  # the old shape's are set aside:
    aside = tmp_path / "run" / "checkpoints" / "world1-batch16"
    assert sorted(p.name for p in aside.iterdir()) == ["step-00000025", "step-00000038"]
    steps = [r["step"] for r in read_rows(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    assert steps[-4:] == [38, 16, 20, 24]  # the first run's last row, then the new shape's

    # The report and the upload read the two numberings as one run, by images seen.
    run = load_run(tmp_path / "run")
    assert run.reshaped and run.shapes() == [(1, 16), (2, 32)]
    summary = summarize(run)
    assert (summary.world_size, summary.global_batch, summary.steps_done) == \
        ("1 -> 2", "16 -> 32", 24)  # not "38 of 24"
    curves = describe(draw([run], next(f for f in FIGURES if f.file == "curves_vs_step.png")))
    loss = next(line for ax in curves["axes"] for line in ax["lines"]
                if line["y_key"] == "train/loss")
    assert loss["x_key"] == "images_seen" and loss["x"] == sorted(loss["x"])
    order = in_training_order(run, [])
    assert [row["images_seen"] for row in order] == sorted(r["images_seen"] for r in order)
    assert order[-1]["step"] == 24  # W&B's last row is the new shape's last, not step 38


# Runs pipeline.train; the first step after the resume fails (an OOM at the raised
# per-GPU batch, a NaN from the scaled-up lr, a node lost: all end the start before a save).
FAIL_AT_FIRST_STEP = """
import sys
from pipeline import train
from pipeline.training import trainer
def failing_lr_at(step, *args):
    raise RuntimeError(f"injected failure at step {step}")
trainer.lr_at = failing_lr_at
sys.exit(train.main(sys.argv[1:]))
"""


def test_a_reshaped_start_that_dies_before_saving_loses_nothing(sample_shards, tmp_path):
    """The old shape's checkpoints stay where the next start finds them until the new shape
    saves; a start that died after setting them aside resumes from there."""
    args = [f"data.shards={sample_shards}", f"runs_dir={tmp_path}", "name=run",
            "data.image_size=32", "eval.every_epochs=0", "log.every_steps=4"]
    run, logs = tmp_path / "run", tmp_path / "logs"
    first = launch([*args, "schedule.epochs=1.5"], 1, logs)
    assert first.wait() == [0], first.text()

    dying = launch([*args, "schedule.epochs=2"], 2, logs, entry=("-c", FAIL_AT_FIRST_STEP))
    assert dying.wait() == [CRASH_EXIT_CODE] * 2, dying.text()
    assert "injected failure at step 12" in dying.outputs[0].read_text()
    assert checkpoints(run) == [25, 38]  # nothing set aside, nothing lost
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000025",
                                                                        "step-00000038"]

    again = launch([*args, "schedule.epochs=2"], 2, logs)
    assert again.wait() == [0, 0], again.text()
    log = again.outputs[0].read_text()
    assert f"resumed from {run / 'checkpoints' / 'step-00000038'} at step 12" in log
    assert "starting from scratch" not in log
    assert checkpoints(run) == [24]
    aside = run / "checkpoints" / "world1-batch16"
    assert sorted(p.name for p in aside.iterdir()) == ["step-00000025", "step-00000038"]

    # As if a start had died between setting the checkpoints aside and its first save:
    # none is left outside; the newest saved one, wherever it is, is resumed.
    lost = run / "checkpoints" / "world2-batch32"
    lost.mkdir()
    os.replace(run / "checkpoints" / "step-00000024", lost / "step-00000024")
    last = launch([*args, "schedule.epochs=2"], 2, logs)
    assert last.wait() == [0, 0], last.text()
    log = last.outputs[0].read_text()
    assert f"resumed from {lost / 'step-00000024'} at step 24" in log
    assert "already complete: step 24 of 24" in log
