"""A stop signal is acted on at the next step boundary whatever the save cadence, before any
evaluation; a checkpoint save is not training time (checkpoint_s, not a throughput drop);
a save that never returns is ended by the watchdog."""

from __future__ import annotations

import re

import pytest
from run_helpers import checkpoints, launch

from pipeline.dist.endings import read_endings
from pipeline.monitor.history import read_rows
from pipeline.training.outcome import CRASH_EXIT_CODE, REQUEUE_EXIT_CODE

# Runs pipeline.train; SIGUSR1 is raised by the process itself while step AT+1 is set up,
# so the ranks' flags carry it from step AT+1 on.
SIGNAL_DURING_STEP = """
import os, signal, sys
from pipeline import train
from pipeline.training import trainer
AT = int(os.environ["SIGNAL_AT"])
lr_at = trainer.lr_at
def lr_at_and_signal(step, *args):
    if step == AT:
        os.kill(os.getpid(), signal.SIGUSR1)
    return lr_at(step, *args)
trainer.lr_at = lr_at_and_signal
sys.exit(train.main(sys.argv[1:]))
"""

# Runs pipeline.train with every checkpoint save taking SLOW_SAVE_S longer.
SLOW_SAVES = """
import os, sys, time
from pipeline import train
from pipeline.training.checkpoint import Checkpointer
save = Checkpointer.save
def slow_save(self, *args, **kwargs):
    time.sleep(float(os.environ["SLOW_SAVE_S"]))
    return save(self, *args, **kwargs)
Checkpointer.save = slow_save
sys.exit(train.main(sys.argv[1:]))
"""


def base(sample_shards, tmp_path) -> list[str]:
    return [f"data.shards={sample_shards}", f"runs_dir={tmp_path}", "name=run",
            "data.image_size=32", "schedule.epochs=2", "log.every_steps=5"]


@pytest.mark.parametrize("cadence", ["checkpoint.every_steps=1", "checkpoint.every_steps=0"])
def test_a_signal_stops_the_run_at_the_next_step_whatever_the_save_cadence(
        sample_shards, tmp_path, cadence):
    """Saving every step used to swallow the stop (the save collected the ranks' verdict and
    kept only its NaN flag): the run trained to the end with status 0."""
    args = [*base(sample_shards, tmp_path), cadence, "eval.every_epochs=0",
            "checkpoint.keep_last=100"]
    job = launch(args, 2, tmp_path / "logs", {"SIGNAL_AT": "9"},
                 entry=("-c", SIGNAL_DURING_STEP))
    assert job.wait() == [REQUEUE_EXIT_CODE] * 2, job.text()
    saved = checkpoints(tmp_path / "run")
    assert saved[-1] in (10, 11), saved  # the step whose flags carried it, or the next
    assert "stopping at step" in job.outputs[0].read_text()


def test_a_signal_in_an_epochs_last_step_stops_before_that_epochs_evaluation(
        sample_shards, tmp_path):
    """25 steps an epoch: the signal is raised while step 25 is set up; the run saves step 25
    without evaluating (the resumed run evaluates it first), instead of evaluating, saving
    and training into epoch 1."""
    args = [*base(sample_shards, tmp_path), "eval.every_epochs=1", "checkpoint.every_steps=0"]
    job = launch(args, 1, tmp_path / "logs", {"SIGNAL_AT": "24"},
                 entry=("-c", SIGNAL_DURING_STEP))
    assert job.wait() == [REQUEUE_EXIT_CODE], job.text()
    run_dir = tmp_path / "run"
    assert checkpoints(run_dir) == [25]
    assert not [r for r in read_rows(run_dir / "metrics.jsonl") if "val/top1" in r]

    resumed = launch(args, 1, tmp_path / "logs")
    assert resumed.wait() == [0], resumed.text()
    val = [r["step"] for r in read_rows(run_dir / "metrics.jsonl") if "val/top1" in r]
    assert val == [25, 50]


def test_checkpoint_time_is_logged_apart_and_not_counted_as_training(sample_shards, tmp_path):
    """Saves every 5 steps that take 4 s more: step_time_s stays that of training (a step is
    well under 0.8 s here), and each interval after a save says how long it took."""
    args = [*base(sample_shards, tmp_path), "schedule.epochs=0.8", "eval.every_epochs=0",
            "checkpoint.every_steps=5"]
    job = launch(args, 1, tmp_path / "logs", {"SLOW_SAVE_S": "4"}, entry=("-c", SLOW_SAVES))
    assert job.wait() == [0], job.text()
    rows = [r for r in read_rows(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    assert "checkpoint_s" not in rows[0]  # no save before step 5's row
    for row in rows[1:]:
        assert row["checkpoint_s"] >= 4.0
        assert row["step_time_s"] < 0.8, row  # with the save it would be over 0.8


def test_a_save_that_never_returns_ends_the_rank_as_frozen(sample_shards, tmp_path):
    """A checkpoint write on a hung file system: the watchdog (save timeout: at least
    dist.timeout_s + min(60, timeout_s) = 4 s here) ends the rank with the crash status,
    every thread's stack, and the ending the job script reads."""
    endings = tmp_path / "endings"
    endings.mkdir()
    args = [*base(sample_shards, tmp_path), "schedule.epochs=0.8", "eval.every_epochs=0",
            "checkpoint.every_steps=5", "dist.timeout_s=2", "dist.save_timeout_s=1"]
    job = launch(args, 1, tmp_path / "logs", {"SLOW_SAVE_S": "3600",
                                              "PIPELINE_ENDINGS_DIR": str(endings)},
                 entry=("-c", SLOW_SAVES))
    assert job.wait(timeout=120) == [CRASH_EXIT_CODE], job.text()
    text = job.text()
    assert re.search(r"frozen: save has taken [45] s, past its watchdog timeout of 4 s "
                     r"\(dist\.\*_timeout_s\); the stacks of this rank's threads follow "
                     r"\(after step 5\)", text), text
    assert "watchdog: start-up 1800 s, step 300 s or 10x the slowest step, save 4 s" in text
    assert 'line 7 in slow_save' in text  # the main thread's stack, where it hangs
    [ending] = read_endings(endings)
    assert (ending.ending, ending.cause, ending.step) == ("crashed", "frozen", 5)
    assert ending.error.startswith("frozen: save has taken")
