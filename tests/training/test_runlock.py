"""One live writer per run folder: a live holder is refused, a gone one is taken over."""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import asdict, replace

import pytest

from pipeline.training.runlock import LOCK, Holder, RunLocked, process_start, release, take


@pytest.fixture
def other_process():
    """A live process of this host, and its Holder as a run of it would write it."""
    sleeper = subprocess.Popen(["sleep", "60"])
    yield sleeper, replace(Holder.this_process(None), pid=sleeper.pid,
                           pid_start=process_start(sleeper.pid))
    sleeper.kill()
    sleeper.wait()


def write_lock(run_dir, holder: Holder) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK).write_text(json.dumps(asdict(holder)))


def held_by(run_dir) -> dict:
    return json.loads((run_dir / LOCK).read_text())


def test_a_live_holder_is_refused_and_a_gone_one_taken_over(other_process, tmp_path, caplog):
    sleeper, holder = other_process
    write_lock(tmp_path, holder)
    me = Holder.this_process(None)
    with pytest.raises(RunLocked, match=rf"{tmp_path} is in use by pid {sleeper.pid} on "
                       rf"{holder.host}, since .*if that process is gone, delete "
                       rf"{tmp_path / LOCK}"):
        take(tmp_path, me)
    assert held_by(tmp_path)["pid"] == sleeper.pid

    sleeper.kill()
    sleeper.wait()
    with caplog.at_level(logging.WARNING):
        take(tmp_path, me)
    assert f"pid {sleeper.pid} on {holder.host}" in caplog.text and "no longer runs" in caplog.text
    assert held_by(tmp_path) == asdict(me)
    release(tmp_path, me)
    assert not (tmp_path / LOCK).exists()


def test_a_reused_pid_is_not_the_holder(other_process, tmp_path):
    _, holder = other_process
    write_lock(tmp_path, replace(holder, pid_start="1"))  # that pid, but started later
    take(tmp_path, Holder.this_process(None))
    assert held_by(tmp_path)["pid"] != holder.pid


def test_a_requeued_job_takes_over_from_its_earlier_run_only(tmp_path, monkeypatch):
    # SLURM cannot answer: scontrol fails at once on an empty config (a missing one it
    # retries for 60 s)
    (tmp_path / "empty.conf").write_text("")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "empty.conf"))
    elsewhere = replace(Holder.this_process("77", restart=0), host="node9", pid=1)
    write_lock(tmp_path, elsewhere)
    with pytest.raises(RunLocked):  # the same job and restart: another step, maybe live
        take(tmp_path, Holder.this_process("77", restart=0))
    take(tmp_path, Holder.this_process("77", restart=1))
    assert held_by(tmp_path)["restart"] == 1


def test_another_hosts_lock_is_taken_once_slurm_says_its_job_ended(slurm_cluster, tmp_path):
    write_lock(tmp_path, replace(Holder.this_process("4242424"), host="node9", pid=1))
    take(tmp_path, Holder.this_process(None))  # SLURM does not know the job: it has ended
    assert held_by(tmp_path)["job_id"] is None


def test_release_leaves_another_starts_lock(other_process, tmp_path):
    _, holder = other_process
    write_lock(tmp_path, holder)
    release(tmp_path, Holder.this_process(None))
    assert held_by(tmp_path)["pid"] == holder.pid
