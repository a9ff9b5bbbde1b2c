"""The training that the launch tests compare with: the unmodified job script on 2 nodes x
2 CPU tasks, run once per session without interruption."""

from __future__ import annotations

import pytest
from launch_runs import SMOKE, Reference, overrides
from slurm_jobs import JOB_SCRIPT, SMALL, sbatch


@pytest.fixture(scope="session")
def reference(slurm_cluster, sample_shards, tmp_path_factory) -> Reference:
    runs = tmp_path_factory.mktemp("reference")
    job = sbatch(JOB_SCRIPT, SMALL, [SMOKE, *overrides(sample_shards, runs, "run")],
                 runs / "job.out")
    status = job.wait()
    return Reference(runs / "run", status, job.text())
