"""Session fixtures shared by all tests: the local SLURM cluster (slurm/local/cluster.sh) and
learnable sample shards for training runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from data_prep import sample, shard

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "slurm" / "local" / "cluster.sh"
SLURM_BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo", "munged")


@dataclass(frozen=True)
class SlurmCluster:
    """A running local cluster: 8 nodes x 8 CPUs x 8 fake GPUs, SLURM_CONF already exported."""

    scratch: Path
    conf: Path


def cluster_sh(command: str, scratch: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER_SH), command, str(scratch)],
                          capture_output=True, text=True, timeout=180)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test that submits to the cluster is selectable with -m slurm / -m "not slurm".
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Starts the cluster in a fresh folder for this test session and stops it afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster runs its daemons as root (SlurmUser=root); "
                    "run the tests as root to include the SLURM tests")
    search_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    missing = [name for name in SLURM_BINARIES if shutil.which(name, path=search_path) is None]
    if missing:
        pytest.skip(f"SLURM binaries not found ({', '.join(missing)}); "
                    "install them with `bash setup.sh --dev` as root")
    scratch = tmp_path_factory.mktemp("slurm")
    started = cluster_sh("start", scratch)
    if started.returncode != 0:
        pytest.fail(f"slurm/local/cluster.sh start {scratch} failed:\n{started.stderr}")
    cluster = SlurmCluster(scratch=scratch, conf=scratch / "etc" / "slurm.conf")
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("SLURM_CONF", str(cluster.conf))
            yield cluster
    finally:
        stopped = cluster_sh("stop", scratch)
        assert stopped.returncode == 0, f"cluster.sh stop failed:\n{stopped.stderr}"


@pytest.fixture(scope="session")
def sample_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 classes: 400 train images in 7 shards, 100 val images in 2."""
    root = tmp_path_factory.mktemp("sample")
    sample.generate(root / "source", classes=10, train_per_class=40, val_per_class=10)
    assert shard.main(["--source", str(root / "source"), "--out", str(root / "shards"),
                       "--shard-size", "64", "--workers", "1"]) == 0
    return root / "shards"
