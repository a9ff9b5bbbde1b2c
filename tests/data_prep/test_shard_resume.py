"""Same inputs give the same bytes; a killed run resumed gives them too."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest
from shard_helpers import SHARD_SCRIPT, run_shard, tree_files

from data_prep import sample
from data_prep.manifest import load_split

# Re-encoding makes each shard take long enough to stop the run in the middle.
ARGS = ("--shard-size", "8", "--resize-shorter", "96", "--seed", "7")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    sample.generate(root, classes=4, train_per_class=40, val_per_class=4, size=(320, 240))
    return root


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    result = run_shard("--source", source, "--out", out, "--workers", "1", *ARGS)
    assert result.returncode == 0, result.stderr
    return tree_files(out)


def test_two_runs_with_other_worker_counts_are_byte_identical(source, reference, tmp_path):
    result = run_shard("--source", source, "--out", tmp_path, "--workers", "2", *ARGS)
    assert result.returncode == 0, result.stderr
    assert tree_files(tmp_path) == reference


@pytest.mark.parametrize("stop,workers", [(signal.SIGKILL, 2), (signal.SIGTERM, 1),
                                          (signal.SIGINT, 1)])
def test_interrupted_run_resumes_to_the_same_bytes(source, reference, tmp_path, stop, workers):
    command = [sys.executable, str(SHARD_SCRIPT), "--source", str(source), "--out",
               str(tmp_path), "--workers", str(workers), *ARGS]
    # A shell that starts jobs in the background makes them ignore SIGINT (and exec keeps
    # that); a terminal's Ctrl-C reaches a process that does not: undo it in the child.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_records(tmp_path / "train" / "records", 3, process)
    process.send_signal(stop)
    process.wait(timeout=60)
    finished = len(list((tmp_path / "train" / "records").glob("*.json")))
    assert 3 <= finished < 20, "the run was not stopped in the middle"
    assert not (tmp_path / "train" / "manifest.json").exists()

    result = run_shard("--source", source, "--out", tmp_path, "--workers", str(workers), *ARGS)
    assert result.returncode == 0, result.stderr
    assert f"{finished} kept from an earlier run" in result.stdout or workers > 1
    assert tree_files(tmp_path) == reference
    assert not list(tmp_path.rglob("*.partial-*"))


def test_a_damaged_finished_shard_is_rewritten(source, reference, tmp_path):
    assert run_shard("--source", source, "--out", tmp_path, *ARGS).returncode == 0
    shard = tmp_path / "train" / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:-700])
    result = run_shard("--source", source, "--out", tmp_path, *ARGS)
    assert result.returncode == 0, result.stderr
    assert "kept from an earlier run" in result.stdout
    assert tree_files(tmp_path) == reference


def test_rerun_with_other_arguments_into_the_same_folder_is_refused(source, tmp_path):
    assert run_shard("--source", source, "--out", tmp_path, *ARGS).returncode == 0
    result = run_shard("--source", source, "--out", tmp_path, *ARGS[:-1], "8")
    assert result.returncode == 2
    assert "was written from other inputs or arguments" in result.stderr


def _wait_for_records(folder, count, process, timeout=120.0):
    """Until `count` shards are finished, whichever they are (workers finish out of order)."""
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("*.json"))) < count:
        assert process.poll() is None, "shard.py ended before it could be interrupted"
        assert time.monotonic() < deadline, f"{count} shard records did not appear in {folder}"
        time.sleep(0.005)


def test_rerun_with_fewer_inputs_removes_the_shards_past_the_new_plan(tmp_path):
    sample.generate(tmp_path / "src", classes=2, train_per_class=1, val_per_class=3,
                    size=(32, 24))
    args = ("--source", tmp_path / "src", "--out", tmp_path / "out", "--splits", "val",
            "--shard-size", "1", "--workers", "1")
    assert run_shard(*args).returncode == 0
    last_class = sorted((tmp_path / "src" / "val").iterdir())[-1]
    shutil.rmtree(last_class)  # val keeps file order: the first three shards stay the same
    result = run_shard(*args)
    assert result.returncode == 0, result.stderr
    assert "3 kept from an earlier run" in result.stdout
    assert "val: removed 3 shards of an earlier run" in result.stdout
    val = tmp_path / "out" / "val"
    assert sorted(p.name for p in val.rglob("val-*")) == sorted(
        f"val-{n:06d}.{ext}" for n in range(3) for ext in ("tar", "idx", "json"))
    assert load_split(tmp_path / "out", "val").num_samples == 3  # the trainer takes it
