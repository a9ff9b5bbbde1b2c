"""Branching a run in place (checkpoint.resume=PATH to an older step, or =none): the newer
checkpoints are set aside, later starts continue the branch chosen (a crash's restart, a
requeue with the same command line), pruning keeps the branch's own, and metrics.jsonl
holds one history."""

from __future__ import annotations

import pytest
from run_helpers import SMOKE, checkpoints

from pipeline.monitor.history import read_rows
from pipeline.train import main
from pipeline.training.outcome import CRASH_EXIT_CODE

# 25 steps an epoch on one rank; 30 steps, a checkpoint every 10 and at the epoch end.
FAST = ["data.image_size=32", "schedule.epochs=1.2", "eval.every_epochs=0", "name=run",
        "log.every_steps=5", "checkpoint.every_steps=10", "checkpoint.keep_last=10"]


def train(shards, runs, *overrides) -> int:
    return main(["--config", str(SMOKE), f"data.shards={shards}", f"runs_dir={runs}", *FAST,
                 *overrides])


def aside(run) -> dict[str, list[str]]:
    return {f.name: sorted(p.name for p in f.iterdir())
            for f in sorted((run / "checkpoints").glob("abandoned-*"))}


def train_steps(run) -> list[int]:
    return [r["step"] for r in read_rows(run / "metrics.jsonl") if "train/loss" in r]


@pytest.fixture
def trained(sample_shards, tmp_path):
    assert train(sample_shards, tmp_path) == 0
    run = tmp_path / "run"
    assert checkpoints(run) == [10, 20, 25, 30]
    return run


def test_a_branch_from_an_older_step_survives_a_crash_and_its_requeues(
        trained, sample_shards, tmp_path, monkeypatch, capsys):
    run, runs = trained, tmp_path
    branch_point = f"checkpoint.resume={run / 'checkpoints' / 'step-00000010'}"

    from pipeline.training import trainer  # the branch's start dies at step 15, unsaved
    lr_at = trainer.lr_at

    def dying(step, *args):
        if step == 14:
            raise RuntimeError("injected failure")
        return lr_at(step, *args)

    monkeypatch.setattr(trainer, "lr_at", dying)
    assert train(sample_shards, runs, branch_point) == CRASH_EXIT_CODE
    monkeypatch.setattr(trainer, "lr_at", lr_at)
    assert checkpoints(run) == [10]
    assert list(aside(run).values()) == [["step-00000020", "step-00000025", "step-00000030"]]

    # the restart after the crash (auto): the branch, not the abandoned step 30
    assert train(sample_shards, runs) == 0
    out = capsys.readouterr().out
    assert "already complete" not in out and "resumed from" in out
    assert checkpoints(run) == [10, 20, 25, 30]
    assert train_steps(run) == [5, 10, 15, 20, 25, 30]  # one history, each step once

    # a requeue repeats checkpoint.resume=step-10: it continues the branch, done at 30
    assert train(sample_shards, runs, branch_point) == 0
    out = capsys.readouterr().out
    assert "continuing that branch" in out and "already complete" in out
    assert checkpoints(run) == [10, 20, 25, 30] and len(aside(run)) == 1
    assert train_steps(run) == [5, 10, 15, 20, 25, 30]


def test_a_fresh_start_in_a_run_folder_keeps_its_own_checkpoints(trained, sample_shards,
                                                                 tmp_path, capsys):
    """resume=none with keep_last=1: the old run's higher steps no longer prune the new
    run's checkpoints as they are written."""
    run = trained
    old = {p.name: (p / "meta.json").read_bytes() for p in (run / "checkpoints").glob("step-*")}
    assert train(sample_shards, tmp_path, "checkpoint.resume=none",
                 "checkpoint.keep_last=1") == 0
    assert "starting from scratch" in capsys.readouterr().out
    assert checkpoints(run) == [30]
    assert (run / "checkpoints" / "step-00000030" / "meta.json").read_bytes() != \
        old["step-00000030"]  # the new run's own step 30
    assert list(aside(run).values()) == [["step-00000010", "step-00000020", "step-00000025",
                                          "step-00000030"]]
    assert train_steps(run) == [5, 10, 15, 20, 25, 30]
