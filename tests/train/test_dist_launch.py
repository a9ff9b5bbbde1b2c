"""Who a process is, from torchrun's or SLURM's variables (the full 64-task shape)."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import DistConfig
from pipeline.launch.distributed import pick_device
from pipeline.launch.environment import detect_launch, tasks_per_node


def test_torchrun_variables():
    launch = detect_launch({"RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1",
                            "LOCAL_WORLD_SIZE": "8", "MASTER_ADDR": "10.0.0.1",
                            "MASTER_PORT": "29400", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    assert launch == type(launch)("torchrun", 9, 16, 1, 8, "10.0.0.1", 29400)


def slurm_env(procid: int, node: int, localid: int) -> dict[str, str]:
    """What srun sets in task PROCID of `--nodes 8 --ntasks-per-node 8` (job 4242)."""
    return {"SLURM_PROCID": str(procid), "SLURM_NTASKS": "64", "SLURM_LOCALID": str(localid),
            "SLURM_NODEID": str(node), "SLURM_STEP_TASKS_PER_NODE": "8(x8)",
            "SLURM_TASKS_PER_NODE": "8(x8)", "SLURM_JOB_ID": "4242",
            "SLURM_LAUNCH_NODE_IPADDR": "10.1.2.3"}


def test_every_task_of_a_64_gpu_job_knows_its_place():
    launches = [detect_launch(slurm_env(8 * n + g, n, g)) for n in range(8) for g in range(8)]
    assert [x.rank for x in launches] == list(range(64))
    assert {(x.world_size, x.local_world_size) for x in launches} == {(64, 8)}
    assert [x.local_rank for x in launches] == [g for _ in range(8) for g in range(8)]
    assert {(x.master_addr, x.master_port) for x in launches} == {("10.1.2.3", 24242)}
    assert {x.launcher for x in launches} == {"slurm"}


def test_master_variables_override_slurm_defaults():
    env = {**slurm_env(3, 0, 3), "MASTER_ADDR": "head", "MASTER_PORT": "1234"}
    assert (detect_launch(env).master_addr, detect_launch(env).master_port) == ("head", 1234)


def test_uneven_tasks_per_node():
    assert tasks_per_node("8(x3),4") == [8, 8, 8, 4]
    env = {**slurm_env(25, 3, 1), "SLURM_NTASKS": "28", "SLURM_STEP_TASKS_PER_NODE": "8(x3),4"}
    assert detect_launch(env).local_world_size == 4
    with pytest.raises(ValueError, match="tasks per node"):
        tasks_per_node("8x3")


def test_no_launcher_is_one_process():
    launch = detect_launch({})
    assert (launch.launcher, launch.rank, launch.world_size) == ("single", 0, 1)
    assert launch.master_port > 0


def test_the_device_follows_the_machine():
    launch = detect_launch({})
    assert pick_device(DistConfig(device="cpu"), launch) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device(DistConfig(device="auto"), launch) == torch.device("cpu")
        with pytest.raises(RuntimeError, match="no GPU is visible"):
            pick_device(DistConfig(device="cuda"), launch)
