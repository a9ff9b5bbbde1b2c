"""The local SLURM cluster runs real multi-node jobs: srun ranks, exit codes, submitit arrays."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import submitit

RANK_SCRIPT = """#!/bin/bash
#SBATCH --job-name=ranks
#SBATCH --time=00:02:00
srun bash -c 'env > {out}/env.$SLURM_PROCID'
"""


def task_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def ints(tasks: list[dict[str, str]], name: str) -> list[int]:
    return [int(task[name]) for task in tasks]


def sbatch_wait(script: Path, *options: str) -> subprocess.CompletedProcess:
    """Submits `script` and blocks until the job ends; returncode is the job's exit code."""
    log = script.with_suffix(".%j.out")
    return subprocess.run(["sbatch", "--wait", "--parsable", f"--output={log}", *options,
                           str(script)], capture_output=True, text=True, timeout=60)


def test_srun_ranks_span_two_nodes(slurm_cluster, tmp_path):
    script = tmp_path / "ranks.sh"
    script.write_text(RANK_SCRIPT.format(out=tmp_path))

    job = sbatch_wait(script, "--nodes=2", "--ntasks-per-node=2", "--gpus-per-node=2")

    assert job.returncode == 0, job.stderr
    tasks = [task_env(tmp_path / f"env.{rank}") for rank in range(4)]
    assert ints(tasks, "SLURM_PROCID") == [0, 1, 2, 3]
    assert ints(tasks, "SLURM_NTASKS") == [4] * 4
    assert ints(tasks, "SLURM_NODEID") == [0, 0, 1, 1], "ranks 0-1 on node 0, 2-3 on node 1"
    assert ints(tasks, "SLURM_LOCALID") == [0, 1, 0, 1]
    # The name-free MASTER_ADDR: the same IPv4 address in every task.
    launch_addrs = {task["SLURM_LAUNCH_NODE_IPADDR"] for task in tasks}
    assert len(launch_addrs) == 1 and re.fullmatch(r"\d+(\.\d+){3}", launch_addrs.pop())


def test_failing_job_reports_its_exit_code(slurm_cluster, tmp_path):
    script = tmp_path / "fail.sh"
    script.write_text("#!/bin/bash\nexit 3\n")

    job = sbatch_wait(script)

    assert job.returncode == 3, job.stderr
    job_id = job.stdout.strip().split(";")[0]
    info = subprocess.run(["scontrol", "show", "job", job_id],
                          capture_output=True, text=True, check=True).stdout
    assert "JobState=FAILED" in info and "ExitCode=3:0" in info, info


def square(x: int) -> int:
    return x * x


def test_submitit_array_returns_every_result(slurm_cluster, tmp_path):
    # The job unpickles `square` by reference, so it must import this module the way pytest
    # did: from the folder that holds the top of its dotted name.
    import_root = Path(__file__).resolve().parents[__name__.count(".")]
    pythonpath = f"export PYTHONPATH={import_root}${{PYTHONPATH:+:$PYTHONPATH}}"
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    # submitit signals USR2 90 s before the time limit; a short limit would requeue the
    # tasks before they start and leave job.result() waiting: 10 min leaves room.
    executor.update_parameters(timeout_min=10, slurm_array_parallelism=2,
                               slurm_setup=[pythonpath])

    jobs = executor.map_array(square, [3, 4])

    deadline = time.monotonic() + 300
    while not all(job.done() for job in jobs):
        assert time.monotonic() < deadline, [job.state for job in jobs]
        time.sleep(2)
    assert [job.result() for job in jobs] == [9, 16]
