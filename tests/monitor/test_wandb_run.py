"""Real short trainings read back: W&B's offline files (with W&B's own record format),
metrics.jsonl across a crash and a resume, the upload command, a W&B that cannot start,
and the per-rank spread and its alert when one rank's loader is slow."""

from __future__ import annotations

import shutil
import subprocess

import torch
from run_helpers import REPO, launch
from wandb_records import offline_run

from pipeline import upload
from pipeline.dist.environment import node_name
from pipeline.monitor.history import DROPPED, read_rows

FAKE_KEY = "local0fakekey" + "7" * 27  # W&B's key length; planted, never to be written


def _train_rows(rows):
    return [r for r in rows if "train/loss" in r]


def _val_rows(rows):
    return [r for r in rows if "val/top1" in r]


def test_an_offline_run_across_a_crash_and_a_resume_is_one_wandb_run_with_every_step_once(
        sample_shards, tmp_path):
    """Run 1 trains epoch 0 (checkpoints at 10, 20, 25); its last checkpoint is deleted,
    as if the job died after logging step 25 and before saving it. Run 2 resumes at 20
    and redoes 21-25; run 3 resumes at 25 and trains epoch 1."""
    run_dir = tmp_path / "wb"
    args = [f"data.shards={sample_shards}", f"runs_dir={tmp_path}", "name=wb", "log.wandb=offline",
            "data.image_size=32", "checkpoint.every_steps=10", "log.samples_every_epochs=1"]
    env = {"WANDB_API_KEY": FAKE_KEY, "WANDB_SILENT": "true"}
    for epochs in (1, 1, 2):
        job = launch([*args, f"schedule.epochs={epochs}"], 1, tmp_path / "logs", env)
        assert job.wait() == [0], job.text()
        if not (run_dir / DROPPED).exists() and epochs == 1:
            shutil.rmtree(run_dir / "checkpoints" / "step-00000025")

    rows = read_rows(run_dir / "metrics.jsonl")
    assert [r["step"] for r in _train_rows(rows)] == list(range(5, 51, 5))
    assert [r["step"] for r in _val_rows(rows)] == [25, 50]
    assert [r["session"] for r in _train_rows(rows)] == [0] * 4 + [1] + [2] * 5
    dropped = read_rows(run_dir / DROPPED)
    assert [(r["step"], "val/top1" in r, r["session"]) for r in dropped] == [
        (25, False, 0), (25, True, 0)]
    assert [r["step"] for r in read_rows(run_dir / "starts.jsonl")] == [0, 20, 25]

    wandb_id = torch.load(run_dir / "checkpoints" / "step-00000050" / "trainer.pt",
                          weights_only=False)["state"]["wandb_id"]
    wb = offline_run(run_dir)
    assert wb.ids == {wandb_id} and len(list((run_dir / "wandb").glob("offline-run-*"))) == 3
    # Each step once: run 2 does not send again the rows W&B has of step 25.
    assert [r["step"] for r in _train_rows(wb.history)] == list(range(5, 51, 5))
    assert [r["step"] for r in _val_rows(wb.history)] == [25, 50]
    kept = {r["step"]: r["train/loss"] for r in _train_rows(rows) if r["step"] != 25}
    assert {r["step"]: r["train/loss"] for r in _train_rows(wb.history)
            if r["step"] != 25} == kept
    grids = [r for r in wb.history if r.get("samples/train/_type") == "image-file"]
    assert [r["step"] for r in grids] == [0, 25] and len(wb.media) == 2
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == [
        "step-00000000.png", "step-00000025.png"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    assert wb.config["derived"]["global_batch"] == 16
    assert wb.config["derived"]["total_steps"] == 50
    assert wb.config["start"]["git"]["commit"] == commit
    assert wb.config["start"]["versions"]["torch"] == torch.__version__
    assert wb.config["start"]["hosts"] == {node_name(): 1}
    assert wb.config["optim"]["base_lr"] == 0.4 and wb.config["name"] == "wb"
    assert wb.warnings == []  # among them W&B's "steps must increase"

    # The upload rebuilds one run from the folder: the redone step 25 as trained.
    assert upload.main([str(run_dir), "--mode", "offline"]) == 0
    sent = offline_run(run_dir / "upload", wait_s=60)
    assert len(sent.ids) == 1 and sent.ids != {wandb_id}
    assert [(r["step"], r["train/loss"]) for r in _train_rows(sent.history)] == [
        (r["step"], r["train/loss"]) for r in _train_rows(rows)]
    assert [(r["step"], r["val/top1"]) for r in _val_rows(sent.history)] == [
        (r["step"], r["val/top1"]) for r in _val_rows(rows)]
    assert [r["step"] for r in sent.history if "samples/train/_type" in r] == [0, 25]
    assert sent.config["derived"]["total_steps"] == 50 and sent.config["starts"] == 3

    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and FAKE_KEY.encode()
              in p.read_bytes()]
    assert leaked == []


SLOW_RANK_1 = """
import os, sys, time
from pipeline.data import loader
if os.environ["RANK"] == "1":  # inside the loader's timed wait for a batch
    check = loader.check_labels
    def slow(*args):
        time.sleep(0.25)
        return check(*args)
    loader.check_labels = slow
from pipeline.train import main
from pipeline.monitor.history import read_rows
sys.exit(main(sys.argv[1:]))
"""


def test_the_rank_spread_names_the_slow_rank_and_a_wandb_that_cannot_start_stops_nothing(
        sample_shards, tmp_path):
    """2 ranks, rank 1's loader 0.25 s slower per batch; W&B online against a port nobody
    listens on, with a 5 s timeout: a warning, and both ranks train on in step."""
    env = {"WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    job = launch([f"data.shards={sample_shards}", f"runs_dir={tmp_path}", "name=slow",
                  "data.image_size=32", "schedule.epochs=0.5", "eval.every_epochs=0",
                  "log.every_steps=1", "log.alert_data_wait_intervals=2", "log.wandb=online",
                  "log.wandb_timeout_s=5"], 2, tmp_path / "logs", env,
                 entry=("-c", SLOW_RANK_1))
    assert job.wait() == [0, 0], job.text()
    console = job.outputs[0].read_text()
    assert "W&B did not start after" in console
    assert "python -m pipeline.upload" in console
    rows = _train_rows(read_rows(tmp_path / "slow" / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for row in rows[1:]:  # the first interval holds rank 0's start-up
        assert row["ranks/slowest"] == 1 and row["ranks/slowest_host"] == node_name()
        assert row["ranks/data_wait_s_max"] >= 0.25 > row["ranks/data_wait_s_min"]
    alerts = [line for line in console.splitlines() if "ALERT a rank waits for data" in line]
    # raised once (log.alert_every_s), naming the rank; the repeats are info lines
    assert len(alerts) == 1 and "rank 1 on" in alerts[0], console
    assert "(alert repeated, not raised again yet)" in (tmp_path / "slow" / "logs" /
                                                        "rank-00000.log").read_text()
