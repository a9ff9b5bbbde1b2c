"""Starting a run folder again: a finished run says so and does nothing, a recipe whose
experiment differs is refused (unless allowed), Ctrl-C saves and stops without a requeue."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_helpers import REPO, SMOKE, checkpoints, launch, wait_for

from pipeline.dist.environment import free_port
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
    out = capsys.readouterr().out
    assert "already complete" in out
    assert "checkpoint.allow_config_change lets through what step-00000005 was saved with: " \
           "optim.base_lr: 0.4 -> 0.2" in out


def test_a_copied_run_folder_resumes_under_its_new_name(finished, sample_shards, tmp_path,
                                                         capsys):
    shutil.copytree(finished / "run", tmp_path / "copy")
    assert train(sample_shards, tmp_path, "name=copy") == 0
    out = capsys.readouterr().out
    assert "ConfigChanged" not in out and "already complete" in out


def test_accumulation_is_a_change_of_shape_not_of_experiment(sample_shards, tmp_path, capsys):
    """Rescaling 64 -> 8 GPUs at one global batch needs it; the reshape handles it."""
    assert train(sample_shards, tmp_path) == 0
    capsys.readouterr()
    assert train(sample_shards, tmp_path, "optim.accumulation=2", "schedule.epochs=0.4") == 0
    out = capsys.readouterr().out
    assert "ConfigChanged" not in out and "global batch 16 -> 32" in out


def test_a_start_with_nothing_to_do_or_refused_at_resume_leaves_the_run_files(
        finished, sample_shards, capsys):
    """config.yaml and derived.json describe the weights: a start that trains nothing
    (already complete) or whose resume is refused after the build does not rewrite them."""
    run = finished / "run"
    names = ("config.yaml", "derived.json", "config.previous.yaml")

    def files() -> dict:
        return {n: (run / n).read_bytes() if (run / n).is_file() else None for n in names}

    before = files()
    assert train(sample_shards, finished, "log.every_steps=3", "dist.timeout_s=99") == 0
    assert "already complete" in capsys.readouterr().out
    assert files() == before
    # allowed past the config check, the weights do not fit the network without BN
    assert train(sample_shards, finished, "model.bn=false",
                 "checkpoint.allow_config_change=true") == 1
    assert "does not fit this model" in capsys.readouterr().out
    assert files() == before


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


def test_a_second_ctrl_c_ends_a_rank_that_waits_in_the_rendezvous(sample_shards, tmp_path):
    """Rank 0 of 2 whose peer never comes waits in the rendezvous for dist.timeout_s; Python
    handlers do not run there, yet a second Ctrl-C must end it at once."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
           "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "rank0.txt"
    rank0 = subprocess.Popen([sys.executable, "-m", "pipeline.train", "--config", str(SMOKE),
                              f"data.shards={sample_shards}", f"runs_dir={tmp_path}", *FAST,
                              "dist.timeout_s=300"], cwd=REPO, env=env,
                             stdout=out.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):  # rank 0 serves the rendezvous store: it waits there
            assert rank0.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        time.sleep(1)
        rank0.send_signal(signal.SIGINT)
        time.sleep(0.5)
        rank0.send_signal(signal.SIGINT)
        assert rank0.wait(timeout=20) == INTERRUPTED_EXIT_CODE, out.read_text()
    finally:
        rank0.kill()
    assert "second Ctrl-C: exiting without saving" in out.read_text()


def _listening(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and local.endswith(f":{port:04X}"):
                return True
    return False
