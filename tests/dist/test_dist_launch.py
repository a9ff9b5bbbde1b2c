"""Who a process is, from torchrun's or SLURM's variables: sbatch, salloc from a login
node, submitit, uneven tasks per node, requeues (pure functions on environment dicts)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.config import DistConfig, load_config
from pipeline.dist.environment import (
    detect_launch,
    expand_hostlist,
    resolve_host,
    tasks_per_node,
)
from pipeline.dist.group import pick_device
from pipeline.dist.requeue import why_not_requeue
from pipeline.resolve import resolve

REPO = Path(__file__).resolve().parents[2]
ADDRESSES = {"gpu03": "10.1.0.3", "gpu04": "10.1.0.4", "login1": "10.9.9.9"}


def fake_dns(name: str) -> str:
    return ADDRESSES[name]


def slurm_env(procid: int, node: int, localid: int, **extra: str) -> dict[str, str]:
    """What srun sets in task PROCID of `sbatch --nodes 8 --ntasks-per-node 8` (job 4242)."""
    return {"SLURM_PROCID": str(procid), "SLURM_NTASKS": "64", "SLURM_LOCALID": str(localid),
            "SLURM_NODEID": str(node), "SLURM_STEP_TASKS_PER_NODE": "8(x8)",
            "SLURM_TASKS_PER_NODE": "8(x8)", "SLURM_JOB_ID": "4242",
            "SLURM_STEP_NODELIST": "gpu[03-10]", "SLURM_JOB_NODELIST": "gpu[03-10]",
            "SLURM_LAUNCH_NODE_IPADDR": "10.1.0.3", **extra}


def test_torchrun_variables():
    launch = detect_launch({"RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1",
                            "LOCAL_WORLD_SIZE": "8", "GROUP_RANK": "1", "MASTER_ADDR": "10.0.0.1",
                            "MASTER_PORT": "29400", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    assert launch == type(launch)("torchrun", 9, 16, 1, 8, 1, "10.0.0.1", 29400)


def test_every_task_of_a_64_gpu_job_knows_its_place():
    launches = [detect_launch(slurm_env(8 * n + g, n, g), fake_dns)
                for n in range(8) for g in range(8)]
    assert [x.rank for x in launches] == list(range(64))
    assert {(x.world_size, x.local_world_size) for x in launches} == {(64, 8)}
    assert [x.local_rank for x in launches] == [g for _ in range(8) for g in range(8)]
    assert [x.node_rank for x in launches] == [n for n in range(8) for _ in range(8)]
    assert {(x.master_addr, x.master_port) for x in launches} == {("10.1.0.3", 20000 + 242 * 20)}
    assert {(x.launcher, x.job_id, x.restart_count) for x in launches} == {("slurm", "4242", 0)}


def test_salloc_from_a_login_node_takes_the_first_compute_node_as_master():
    """srun typed in an salloc shell: the launch address is the login node's, where no
    rank runs; the master must be the first node of the step."""
    env = slurm_env(5, 1, 1, SLURM_LAUNCH_NODE_IPADDR="10.9.9.9", SLURM_NTASKS="8",
                    SLURM_STEP_TASKS_PER_NODE="4(x2)", SLURM_STEP_NODELIST="gpu[03-04]",
                    SLURM_JOB_NODELIST="gpu[03-04]")
    launch = detect_launch(env, fake_dns)
    assert (launch.master_addr, launch.local_world_size, launch.node_rank) == ("10.1.0.3", 4, 1)


def test_submitit_tasks_outside_a_named_step_use_the_job_node_list():
    env = slurm_env(3, 0, 3, SLURM_JOB_NODELIST="gpu04,gpu03", SUBMITIT_EXECUTOR="slurm")
    del env["SLURM_STEP_NODELIST"]
    assert detect_launch(env, fake_dns).master_addr == "10.1.0.4"


def test_a_requeued_job_meets_a_new_rendezvous_port():
    ports = {detect_launch(slurm_env(0, 0, 0, SLURM_RESTART_COUNT=str(n)), fake_dns).master_port
             for n in range(20)}
    assert len(ports) == 20
    later = detect_launch(slurm_env(0, 0, 0, SLURM_RESTART_COUNT="3"), fake_dns)
    assert later.restart_count == 3


def test_master_variables_override_slurm_defaults():
    env = slurm_env(3, 0, 3, MASTER_ADDR="head", MASTER_PORT="1234")
    launch = detect_launch(env, fake_dns)  # "head" is not looked up
    assert (launch.master_addr, launch.master_port) == ("head", 1234)


def test_uneven_tasks_per_node():
    assert tasks_per_node("8(x3),4") == [8, 8, 8, 4]
    env = slurm_env(25, 3, 1, SLURM_NTASKS="28", SLURM_STEP_TASKS_PER_NODE="8(x3),4")
    assert detect_launch(env, fake_dns).local_world_size == 4
    with pytest.raises(ValueError, match="tasks per node"):
        tasks_per_node("8x3")


def test_host_lists():
    assert expand_hostlist("gpu[01-03,07],login2") == ["gpu01", "gpu02", "gpu03", "gpu07",
                                                        "login2"]
    assert expand_hostlist("node[8-10]-ib") == ["node8-ib", "node9-ib", "node10-ib"]
    assert expand_hostlist("node1") == ["node1"]


def test_rank_without_local_world_size_never_becomes_global_bn():
    """A launcher that sets RANK / WORLD_SIZE only: the ranks per node come from SLURM's
    counts where they agree, else sync_bn: node is refused with the way out."""
    bare = {"RANK": "3", "WORLD_SIZE": "16", "MASTER_ADDR": "a", "MASTER_PORT": "1"}
    assert detect_launch(bare).local_world_size is None
    under_slurm = {**bare, "SLURM_STEP_TASKS_PER_NODE": "8(x2)"}
    assert detect_launch(under_slurm).local_world_size == 8
    cfg = load_config(None, ["data.shards=/x", "model.sync_bn=node"])
    with pytest.raises(ValueError, match="without LOCAL_WORLD_SIZE"):
        resolve(cfg, 16, 1_281_167, detect_launch(bare).local_world_size)
    assert resolve(cfg, 16, 1_281_167, 8).bn_group == 8


def test_requeue_only_for_a_slurm_job_under_its_cap():
    first = detect_launch(slurm_env(0, 0, 0), fake_dns)
    assert why_not_requeue(first, max_requeues=2) is None
    third = detect_launch(slurm_env(0, 0, 0, SLURM_RESTART_COUNT="2"), fake_dns)
    assert "requeued 2 times, dist.max_requeues = 2" in why_not_requeue(third, 2)
    assert "not a SLURM job" in why_not_requeue(detect_launch({}), 2)


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


def test_node_names_only_slurm_knows_resolve_through_its_node_addr(slurm_cluster):
    with pytest.raises(OSError):
        socket.getaddrinfo("node3", None)  # the local cluster's fake names are in no DNS
    assert resolve_host("node3") == "127.0.0.1"
    with pytest.raises(ValueError, match="set MASTER_ADDR"):
        resolve_host("no-such-node")


@pytest.mark.parametrize("visible, local_rank, expected", [
    (8, 3, torch.device("cuda", 3)),  # all of the node's GPUs visible: its own by local rank
    (1, 5, torch.device("cuda", 0)),  # narrowed to one GPU per task (--gpus-per-task=1)
    (0, 0, "no GPU is visible"),
    (4, 6, "local rank 6 has no GPU: 4 are visible"),
])
def test_the_cuda_device_of_a_rank(visible, local_rank, expected):
    launch = detect_launch(slurm_env(local_rank, 0, local_rank), fake_dns)
    if isinstance(expected, str):
        with pytest.raises(RuntimeError, match=expected):
            pick_device(DistConfig(device="cuda"), launch, visible)
    else:
        assert pick_device(DistConfig(device="auto"), launch, visible) == expected
    assert pick_device(DistConfig(device="cpu"), launch, visible) == torch.device("cpu")


def test_python_m_pipeline_dist_prints_this_task_as_one_json_line():
    """What DRY_RUN=1 runs in every task: torchrun's variables read back, one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK"))}
    env.update(RANK="3", WORLD_SIZE="8", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2",
               GROUP_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29511",
               CUDA_VISIBLE_DEVICES="0,1")
    done = subprocess.run([sys.executable, "-m", "pipeline.dist"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    task = json.loads(lines[0])
    assert (task["launcher"], task["rank"], task["world_size"], task["local_rank"],
            task["local_world_size"], task["master_port"]) == ("torchrun", 3, 8, 1, 2, 29511)
    assert task["visible_gpus"] == "0,1" and task["node"]
