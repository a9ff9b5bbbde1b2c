"""Resumed training is exact: a run stopped mid-epoch (SIGKILL of one rank, or SIGTERM with
its requeue status) and started again ends with the very same weights, optimizer state
and BN statistics as an uninterrupted run. 2 ranks, gloo, real processes."""

from __future__ import annotations

import json
import shutil
import signal

import pytest
from run_helpers import assert_same_tensors, checkpoints, launch, state_at, wait_for

from data_prep import shard
from pipeline.monitor.history import read_rows
from pipeline.training.outcome import CRASH_EXIT_CODE, REQUEUE_EXIT_CODE

STEPS = 12  # of 25 per epoch (400 images / (2 ranks x 8)): every stop is mid-epoch


def overrides(shards, runs, name: str, engine: str = "ddp") -> list[str]:
    return [f"data.shards={shards}", f"runs_dir={runs}", f"name={name}", "data.batch_size=8",
            f"schedule.epochs={STEPS / 25}", "checkpoint.every_steps=4", "log.every_steps=2",
            "eval.every_epochs=0", "dist.timeout_s=60", f"dist.engine={engine}",
            "data.color_jitter=0.2", "data.image_size=32"]


@pytest.fixture(scope="module")
def reference(sample_shards, tmp_path_factory):
    """reference(engine): the folder of an uninterrupted run, checkpoints at 4, 8 and 12."""
    made = {}

    def run(engine: str):
        if engine not in made:
            runs = tmp_path_factory.mktemp(f"reference-{engine}")
            job = launch(overrides(sample_shards, runs, "run", engine), 2, runs / "logs")
            assert job.wait() == [0, 0], job.text()
            assert checkpoints(runs / "run") == [4, 8, 12]
            made[engine] = runs / "run"
        return made[engine]

    return run


def test_sigkill_of_one_rank_then_resume_is_exact(reference, sample_shards, tmp_path):
    expected = reference("ddp")
    args = overrides(sample_shards, tmp_path, "run")
    job = launch(args, 2, tmp_path / "logs")
    wait_for(tmp_path / "run" / "checkpoints" / "step-00000004", job)
    job.signal(1, signal.SIGKILL)
    codes = job.wait(timeout=120)
    assert codes[1] == -signal.SIGKILL
    assert codes[0] == CRASH_EXIT_CODE, job.text()  # the survivor fails, not hangs
    assert "another rank died" in job.outputs[0].read_text()
    stopped_at = checkpoints(tmp_path / "run")[-1]
    assert 4 <= stopped_at < STEPS

    resumed = launch(args, 2, tmp_path / "logs")
    assert resumed.wait() == [0, 0], resumed.text()
    assert f"resumed from {tmp_path / 'run' / 'checkpoints'}" in resumed.outputs[0].read_text()
    assert_same_tensors(state_at(tmp_path / "run", STEPS), state_at(expected, STEPS))


@pytest.mark.parametrize("engine", ["ddp", "deepspeed"])
def test_sigterm_checkpoints_every_rank_and_asks_for_a_requeue(reference, sample_shards,
                                                                 tmp_path, engine):
    expected = reference(engine)
    args = overrides(sample_shards, tmp_path, "run", engine)
    job = launch(args, 2, tmp_path / "logs")
    wait_for(tmp_path / "run" / "checkpoints" / "step-00000004", job)
    job.signal(0, signal.SIGTERM)  # one rank only: the other learns it at the next step
    assert job.wait(timeout=120) == [REQUEUE_EXIT_CODE] * 2, job.text()
    stopped_at = checkpoints(tmp_path / "run")[-1]
    assert 4 < stopped_at < STEPS  # a checkpoint at the step where they stopped
    assert "stopping at step" in job.outputs[1].read_text()

    resumed = launch(args, 2, tmp_path / "logs")
    assert resumed.wait() == [0, 0], resumed.text()
    assert f"at step {stopped_at}" in resumed.outputs[0].read_text()
    assert_same_tensors(state_at(tmp_path / "run", STEPS), state_at(expected, STEPS))


def test_a_damaged_newest_checkpoint_is_skipped_with_a_message(reference, sample_shards,
                                                               tmp_path):
    expected = reference("ddp")
    shutil.copytree(expected, tmp_path / "run")
    engine_file = tmp_path / "run" / "checkpoints" / "step-00000012" / "engine.pt"
    data = bytearray(engine_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    engine_file.write_bytes(bytes(data))

    job = launch(overrides(sample_shards, tmp_path, "run"), 2, tmp_path / "logs")
    assert job.wait() == [0, 0], job.text()
    log = job.outputs[0].read_text()
    assert "step-00000012 is damaged (engine.pt does not match its sha256)" in log
    assert "resuming from step-00000008" in log
    assert_same_tensors(state_at(tmp_path / "run", STEPS), state_at(expected, STEPS))


# Runs pipeline.train with SIGTERM raised by the process itself during step 24, so that
# the ranks agree to stop (one step later) exactly at step 25, the end of epoch 0.
SIGNAL_AT_EPOCH_END = """
import os, signal, sys
from pipeline import train
from pipeline.training import trainer
lr_at = trainer.lr_at
def lr_at_and_signal(step, *args):
    if step == 23:  # the flag raised in step 24 is acted on after step 25
        os.kill(os.getpid(), signal.SIGTERM)
    return lr_at(step, *args)
trainer.lr_at = lr_at_and_signal
sys.exit(train.main(sys.argv[1:]))
"""


def test_a_preemption_at_an_epoch_end_still_evaluates_that_epoch(sample_shards, tmp_path):
    """Stopped on the epoch's last step, before its evaluation: the resumed run evaluates
    that epoch first, once, then trains on (25 steps per epoch, 30 in all)."""
    args = [f"data.shards={sample_shards}", f"runs_dir={tmp_path}", "name=run",
            "schedule.epochs=1.2", "eval.every_epochs=1", "checkpoint.every_steps=0",
            "data.image_size=32"]
    run_dir = tmp_path / "run"
    job = launch(args, 1, tmp_path / "logs", entry=("-c", SIGNAL_AT_EPOCH_END))
    assert job.wait() == [REQUEUE_EXIT_CODE], job.text()
    assert checkpoints(run_dir) == [25]

    resumed = launch(args, 1, tmp_path / "logs")
    assert resumed.wait() == [0], resumed.text()
    assert "at step 25" in resumed.outputs[0].read_text()
    assert [r["step"] for r in read_rows(run_dir / "metrics.jsonl") if "val/top1" in r] == [25, 30]
    assert checkpoints(run_dir) == [25, 30]
    assert json.loads((run_dir / "checkpoints" / "step-00000025" / "meta.json").read_text())[
        "top1"] is not None  # the re-saved epoch-end checkpoint carries its accuracy


def test_a_mid_epoch_resume_onto_recut_shards_restarts_that_epoch(sample_shards, tmp_path):
    """The same images cut into shards of 32 instead of 64: the saved reader position names
    the old shards, so the epoch restarts from its beginning (the step as for a reshape)."""
    recut = tmp_path / "recut"
    assert shard.main(["--source", str(sample_shards.parent / "source"), "--out", str(recut),
                       "--shard-size", "32", "--workers", "1"]) == 0
    args = [f"runs_dir={tmp_path}", "name=run", "data.image_size=32", "eval.every_epochs=0",
            "checkpoint.every_steps=5"]
    first = launch([f"data.shards={sample_shards}", *args, "schedule.epochs=0.4"], 1,
                   tmp_path / "logs")
    assert first.wait() == [0], first.text()
    assert checkpoints(tmp_path / "run") == [5, 10]

    again = launch([f"data.shards={recut}", *args, "schedule.epochs=1"], 1, tmp_path / "logs")
    assert again.wait() == [0], again.text()
    log = again.outputs[0].read_text()
    assert "the shards differ from the checkpoint's (another cut or copy of the data: " \
           "data.shards): epoch 0 was 10 of 25 steps in and restarts from its beginning, " \
           "at step 0" in log
    assert f"resumed from {tmp_path / 'run' / 'checkpoints' / 'step-00000010'} at step 0" in log
    assert checkpoints(tmp_path / "run")[-1] == 25
