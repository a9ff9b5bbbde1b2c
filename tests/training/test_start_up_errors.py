"""A training that cannot start says why in one console line, the traceback goes to the
rank's log file only, and "another rank" is said only where a collective failed. In this
process, as a user's single `python -m pipeline.train` would run."""

from __future__ import annotations

import os
import subprocess

import pytest
from run_helpers import SMOKE

from pipeline.dist.environment import free_port
from pipeline.train import main
from pipeline.training.outcome import CRASH_EXIT_CODE

FAST = ["data.image_size=32", "schedule.epochs=0.2", "eval.every_epochs=0"]


def train(shards, runs, *overrides) -> int:
    return main(["--config", str(SMOKE), f"data.shards={shards}", f"runs_dir={runs}", *FAST,
                 *overrides])


def one_error_line(console: str) -> str:
    assert "Traceback" not in console and "another rank" not in console, console
    errors = [line for line in console.splitlines() if " ERROR " in line]
    assert len(errors) == 1, console
    return errors[0]


@pytest.mark.parametrize("case", ["no folder", "the raw tree", "num_classes", "batch"])
def test_a_start_up_error_is_one_line_that_says_what_to_do(case, sample_shards, tmp_path,
                                                             capsys):
    shards, extra, expected = {
        "no folder": (tmp_path / "nowhere", [], f"data.shards = {tmp_path / 'nowhere'}: "
                      "no such folder; point it at data_prep/shard.py's --out"),
        "the raw tree": (sample_shards.parent / "source", [], "looks like an ImageNet tree, "
                         "not shards: run python data_prep/shard.py --source"),
        "num_classes": (sample_shards, ["model.num_classes=5"], "model.num_classes = 5, but "
                        "the shards' classes.json has 10 classes"),
        "batch": (sample_shards, ["data.batch_size=1000"], "400 samples do not fill one "
                  "global batch of 1000 x 1 ranks"),
    }[case]
    assert train(shards, tmp_path / "runs", *extra) == 1
    assert expected in one_error_line(capsys.readouterr().out)
    log = (tmp_path / "runs" / "smoke_cpu" / "logs" / "rank-00000.log").read_text()
    assert expected in log and "Traceback" in log  # for whoever debugs it


def test_a_full_disk_is_named_and_leaves_no_partial_checkpoint(sample_shards, tmp_path,
                                                                capsys):
    runs = tmp_path / "small"
    runs.mkdir()
    # 4 MiB: the logs fit, a BN-Inception checkpoint (~90 MB) does not.
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(runs)],
                      capture_output=True).returncode != 0:
        pytest.skip("needs to mount a small tmpfs (root)")
    try:
        assert train(sample_shards, runs, "schedule.epochs=0.04") == 1  # one step
        line = one_error_line(capsys.readouterr().out)
        checkpoints = runs / "smoke_cpu" / "checkpoints"
        assert f"{checkpoints / 'step-00000001.partial'}: disk full: free space there or " \
               "write elsewhere (OSError, errno 28)" in line
        assert list(checkpoints.iterdir()) == []
        assert not (runs / "smoke_cpu" / "lock.json").exists()
    finally:
        subprocess.run(["umount", "--lazy", str(runs)], check=True)


def test_a_rank_whose_peers_never_come_says_whom_it_waits_for(tmp_path, capsys, caplog,
                                                              monkeypatch):
    port = free_port()
    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
                       "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    assert train(tmp_path, tmp_path / "runs", "dist.timeout_s=4") == CRASH_EXIT_CODE
    console = capsys.readouterr().err + caplog.text  # before the run's logging: no handler
    assert f"rank 0 of 2 is still waiting at 127.0.0.1:{port} for the other ranks to join " \
           "(WORLD_SIZE=2); it gives up after dist.timeout_s=4 s" in console
    assert f"rank 0 of 2: the process group at 127.0.0.1:{port} did not form within 4 s" \
        in console and "start all 2 processes with the same MASTER_ADDR" in console
    assert "Traceback" not in console
