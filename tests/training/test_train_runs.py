"""Whole training runs: learning under torchrun and a diverging loss (srun and sbatch:
tests/launch/; W&B and metrics.jsonl across a resume: tests/monitor/)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import torch
from run_helpers import REPO, SMOKE, checkpoints, launch

from pipeline.config import load_config
from pipeline.monitor.history import read_rows


def test_a_small_run_learns_under_torchrun(sample_shards, tmp_path):
    """Two epochs on 2 CPU ranks at 32 px: far above the 10% of chance."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "-m", "pipeline.train", "--config", str(SMOKE), f"data.shards={sample_shards}",
               f"runs_dir={tmp_path}", "name=learn", "data.batch_size=8", "schedule.epochs=2",
               "eval.precise_bn_batches=4", "data.image_size=32"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = tmp_path / "learn"
    train = [r for r in read_rows(run_dir / "metrics.jsonl") if "train/loss" in r]
    val = [r for r in read_rows(run_dir / "metrics.jsonl") if "val/top1" in r]
    assert [r["step"] for r in val] == [25, 50] and {r["val/images"] for r in val} == {100}
    assert train[-1]["train/top1"] > 0.5 and val[-1]["val/top1"] > 0.5
    assert train[-1]["train/loss"] < 0.6 * train[0]["train/loss"]
    assert all(r["images_per_s"] > 0 and 0 <= r["data_wait_fraction"] < 1 for r in train)
    derived = json.loads((run_dir / "derived.json").read_text())
    assert (derived["world_size"], derived["global_batch"], derived["steps_per_epoch"]) == (
        2, 16, 25)
    assert load_config(run_dir / "config.yaml").data.batch_size == 8  # the resolved tree
    assert checkpoints(run_dir) == [25, 50]
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == ["rank-00000.log",
                                                                    "rank-00001.log"]


def test_a_diverging_loss_stops_with_the_step_and_the_last_good_checkpoint(sample_shards,
                                                                          tmp_path):
    job = launch([f"data.shards={sample_shards}", f"runs_dir={tmp_path}", "name=nan",
                  "optim.base_lr=1e8", "schedule.warmup_epochs=0", "checkpoint.every_steps=1",
                  "schedule.epochs=1", "data.image_size=32"], 1, tmp_path / "logs")
    assert job.wait() == [1], job.text()
    log = (tmp_path / "nan" / "logs" / "rank-00000.log").read_text()
    bad = int(re.search(r"NonFiniteLoss: the loss was NaN or Inf at step (\d+);", log)[1])
    good = checkpoints(tmp_path / "nan")
    assert good and good[-1] < bad and f"step-{good[-1]:08d}. Lower optim.base_lr" in log
    assert f"ALERT loss is NaN/Inf: training stopped at step {bad}; the last good " \
           f"checkpoint is {tmp_path / 'nan' / 'checkpoints' / f'step-{good[-1]:08d}'}" in log
    state = torch.load(tmp_path / "nan" / "checkpoints" / f"step-{good[-1]:08d}" / "engine.pt",
                       weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
