"""Starting a run folder again: a finished run says so and does nothing, a recipe whose
experiment differs is refused (unless allowed), Ctrl-C saves and stops without a requeue."""

from __future__ import annotations

import signal
import time

import pytest
from run_helpers import SMOKE, checkpoints, launch, wait_for

from pipeline.dist.signals import INTERRUPTED_EXIT_CODE
from pipeline.monitor.history import read_rows
from pipeline.train import main
from pipeline.training.checkpoint import validate

FAST = ["data.image_size=32", "schedule.epochs=0.2", "eval.every_epochs=0", "name=run"]


def train(shards, runs, *overrides) -> int:
    return main(["--config", str(SMOKE), f"data.shards={shards}", f"runs_dir={runs}", *FAST,
                 *overrides])


@pytest.fixture(scope="module")
def finished(sample_shards, tmp_path_factory):
    runs = tmp_path_factory.mktemp("finished")
    assert train(sample_shards, runs) == 0
    assert checkpoints(runs / "run") == [5]
    return runs


def test_a_finished_run_started_again_says_so_and_does_nothing(finished, sample_shards,
                                                                capsys):
    before = read_rows(finished / "run" / "metrics.jsonl")
    assert train(sample_shards, finished) == 0
    assert "run run is already complete: step 5 of 5, best val top-1" in capsys.readouterr().out
    assert read_rows(finished / "run" / "metrics.jsonl") == before
    assert checkpoints(finished / "run") == [5]


def test_another_experiment_under_the_same_name_is_refused_unless_allowed(finished,
                                                                          sample_shards,
                                                                          capsys):
    config = (finished / "run" / "config.yaml").read_text()
    assert train(sample_shards, finished, "optim.base_lr=0.2", "model.dropout=0.3",
                 "log.every_steps=1", "dist.timeout_s=99") == 1
    line = [x for x in capsys.readouterr().out.splitlines() if " ERROR " in x]
    assert len(line) == 1 and "ConfigChanged: run " in line[0]
    assert "of another config: model.dropout: 0.0 -> 0.3; optim.base_lr: 0.4 -> 0.2. " \
           "Resuming would mix two experiments" in line[0]  # the safe keys are not named
    assert (finished / "run" / "config.yaml").read_text() == config  # the run is untouched

    assert train(sample_shards, finished, "optim.base_lr=0.2",
                 "checkpoint.allow_config_change=true") == 0
    assert "already complete" in capsys.readouterr().out


def test_ctrl_c_on_one_rank_saves_on_every_rank_and_stops_without_a_requeue(sample_shards,
                                                                            tmp_path):
    args = [f"data.shards={sample_shards}", f"runs_dir={tmp_path}", "name=run",
            "data.image_size=32", "data.batch_size=8", "schedule.epochs=2",
            "eval.every_epochs=0", "log.every_steps=1", "dist.timeout_s=60"]
    job = launch(args, 2, tmp_path / "logs")
    wait_for(tmp_path / "run" / "metrics.jsonl", job)  # the first step is done
    job.signal(1, signal.SIGINT)
    assert job.wait(timeout=120) == [INTERRUPTED_EXIT_CODE] * 2, job.text()
    stopped = checkpoints(tmp_path / "run")
    assert len(stopped) == 1 and validate(tmp_path / "run" / "checkpoints" /
                                          f"step-{stopped[0]:08d}") is None
    text = job.text()
    assert f"stopping at step {stopped[0]}: another rank's signal" in text
    assert "interrupted (Ctrl-C): the checkpoint above holds every step so far" in text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert "requeue" not in text


def test_a_second_ctrl_c_exits_at_once(sample_shards, tmp_path):
    job = launch([f"data.shards={sample_shards}", f"runs_dir={tmp_path}", "name=run"], 1,
                 tmp_path / "logs")
    wait_for(tmp_path / "run" / "logs" / "rank-00000.log", job)
    job.signal(0, signal.SIGINT)
    time.sleep(0.5)  # two signals close together reach Python's handler as one
    job.signal(0, signal.SIGINT)
    assert job.wait(timeout=30) == [INTERRUPTED_EXIT_CODE]
    assert "second Ctrl-C: exiting without saving" in job.text()
    assert checkpoints(tmp_path / "run") == []


def test_a_checkpoint_of_another_model_is_one_line_even_when_changes_are_allowed(
        finished, sample_shards, capsys):
    config = (finished / "run" / "config.yaml").read_text()
    assert train(sample_shards, finished, "model.bn=false",
                 "checkpoint.allow_config_change=true") == 1
    console = capsys.readouterr().out
    errors = [line for line in console.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in console
    assert f"CheckpointError: {finished / 'run' / 'checkpoints' / 'step-00000005'} does not " \
           "fit this model (Error(s) in loading state_dict" in errors[0]
    assert (finished / "run" / "config.yaml").read_text() == config
