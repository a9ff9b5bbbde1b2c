"""`--submit slurm`: a real SLURM array job (submitit) writes the same shards as a local run."""

from __future__ import annotations

import json

from shard_helpers import manifest, run_shard, tree_files


def test_slurm_array_job_writes_the_same_shards_as_a_local_run(slurm_cluster, tree, sharded,
                                                               tmp_path):
    result = run_shard("--source", tree[0], "--out", tmp_path, "--shard-size", "10",
                       "--max-rejects", "3", "--submit", "slurm", "--slurm-tasks", "3",
                       "--slurm-cpus-per-task", "1", "--slurm-mem-gb", "1",
                       "--slurm-time-min", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted SLURM array job" in result.stdout
    assert tree_files(tmp_path) == tree_files(sharded)
    for split in ("train", "val"):
        ours, local = manifest(tmp_path, split), manifest(sharded, split)
        assert ours["shards"] == local["shards"] and ours["rejected"] == local["rejected"]
    # one array task per share of the shards: three, or one per shard where a split has fewer
    tasks = sum(min(3, len(manifest(sharded, split)["shards"])) for split in ("train", "val"))
    task_results = sorted((tmp_path / "slurm_logs").rglob("*_result.pkl"))
    assert len(task_results) == tasks and tasks > 3
    assert json.loads((tmp_path / "classes.json").read_text())[0]["index"] == 0
