"""python -m pipeline.preflight on a 2-node allocation of the local SLURM cluster: it passes
on good shards and names the node, rank and shard when a shard is damaged."""

from __future__ import annotations

import shutil
import sys

from run_helpers import REPO
from slurm_jobs import sbatch

SCRIPT = """#!/bin/bash
srun --export=ALL,OMP_NUM_THREADS=1 {python} -m pipeline.preflight --config {config} \\
    data.shards={shards} model.sync_bn=node
"""


def preflight(shards, tmp_path, name: str, tasks_per_node: int):
    script = tmp_path / f"{name}.sh"
    script.write_text(SCRIPT.format(python=sys.executable, shards=shards,
                                    config=REPO / "configs" / "smoke_cpu.yaml"))
    job = sbatch(script, ["--nodes=2", f"--ntasks-per-node={tasks_per_node}",
                          f"--gpus-per-node={tasks_per_node}", "--cpus-per-task=1",
                          "--time=00:05:00"], [], tmp_path / f"{name}.out")
    return job.wait(timeout=120), job.text()


def test_preflight_passes_and_names_the_node_of_a_damaged_shard(slurm_cluster, sample_shards,
                                                                 tmp_path):
    status, report = preflight(sample_shards, tmp_path, "good", tasks_per_node=2)
    assert status == 0, report
    for rank, local, node in ((0, 0, "node1"), (1, 1, "node1"), (2, 0, "node2"),
                              (3, 1, "node2")):
        assert f"{rank:<5} {local:<6} {node:<15} cpu" in report
    assert "all-reduce bus bandwidth inside each node" in report
    assert "all-reduce bus bandwidth across nodes" in report
    assert "shards from node1 (rank 0): train: manifest and 7 indexes ok, 2 tars" in report
    assert "shards from node2 (rank 2): train: manifest and 7 indexes ok, 2 tars" in report
    assert "ranks 0-1: node1" in report and "ranks 2-3: node2" in report
    assert report.rstrip().endswith("preflight passed")

    damaged = shutil.copytree(sample_shards, tmp_path / "shards")
    tar = damaged / "train" / "train-000001.tar"  # the second node's sample: shards 1 and 3
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only its sha256 can tell
    tar.write_bytes(bytes(data))
    status, report = preflight(damaged, tmp_path, "damaged", tasks_per_node=1)
    assert status == 1, report
    failures = [line for line in report.splitlines() if line.startswith("FAIL")]
    assert failures == [f"FAIL node2 rank 1: shard {tar} does not match its manifest's "
                        "sha256; rerun data_prep/shard.py --verify on it"], report
