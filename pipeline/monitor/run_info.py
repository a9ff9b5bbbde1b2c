"""What a run was made of, recorded at every start: code, versions, machines, job.

    info = describe_start(env, hosts)   # {"git": {...}, "versions": {...}, "hosts": ...}

W&B shows it as the `start` part of the run's config (the last start's), and the run
folder keeps every start's in starts.jsonl.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from collections import Counter
from pathlib import Path

import torch

from pipeline.dist.group import DistEnv, device_name

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("nvidia-dali-cuda120", "deepspeed", "wandb", "webdataset", "numpy")


def describe_start(env: DistEnv, hosts: list[str]) -> dict:
    launch = env.launch
    return {"git": git_state(), "versions": versions(env),
            "hosts": dict(Counter(hosts)),  # node -> ranks on it
            "world_size": env.world_size, "device": device_name(env.device),
            "launcher": launch.launcher,
            "slurm_job_id": launch.job_id, "slurm_restart": launch.restart_count}


def git_state() -> dict:
    """The commit and whether the tree had changes; {} outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {}


def versions(env: DistEnv) -> dict:
    found = {"python": platform.python_version(), "torch": torch.__version__,
             "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
             "nccl": ".".join(map(str, torch.cuda.nccl.version()))
             if env.backend == "nccl" else None}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found

