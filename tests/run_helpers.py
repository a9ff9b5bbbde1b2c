"""Launching real training processes the way torchrun or srun does: one per rank, with
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* set, each with its own exit status and output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.dist.environment import free_port

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke_cpu.yaml"


@dataclass
class Job:
    processes: list[subprocess.Popen]
    outputs: list[Path]

    def wait(self, timeout: float = 300) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for p in self.processes:
            try:
                codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"training did not end within {timeout}s:\n{self.text()}") from None
        return codes

    def kill(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.kill()
                p.wait()

    def signal(self, rank: int, sig: signal.Signals) -> None:
        self.processes[rank].send_signal(sig)

    def text(self) -> str:
        return "\n".join(f"--- rank {r}\n{o.read_text()[-4000:]}"
                         for r, o in enumerate(self.outputs))


def launch(overrides: list[str], world: int, logs: Path, extra_env: dict | None = None,
           entry: tuple[str, ...] = ("-m", "pipeline.train")) -> Job:
    """python -m pipeline.train --config smoke_cpu.yaml OVERRIDES on `world` ranks (`entry`
    may name another way in, e.g. ("-c", script) that calls pipeline.train.main)."""
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    processes, outputs = [], []
    # Not SLURM's job even when pytest runs inside one: a preempted test run must not
    # requeue the job around it.
    outer = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    for rank in range(world):
        env = {**outer, "RANK": str(rank), "WORLD_SIZE": str(world),
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               **(extra_env or {})}
        out = logs / f"launch-{len(list(logs.glob('launch-*')))}-rank{rank}.txt"
        command = [sys.executable, *entry, "--config", str(SMOKE), *overrides]
        processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=out.open("w"),
                                          stderr=subprocess.STDOUT))
        outputs.append(out)
    return Job(processes, outputs)


def wait_for(path: Path, job: Job, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if any(p.poll() is not None for p in job.processes):
            raise AssertionError(f"a rank ended before {path} appeared:\n{job.text()}")
        if time.monotonic() > deadline:
            job.kill()
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.05)


def checkpoints(run_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*")
                  if not p.name.endswith(".partial"))


def state_at(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint at `step` (model, BN buffers, optimizer state)."""
    folder = run_dir / "checkpoints" / f"step-{step:08d}"
    if (folder / "engine.pt").is_file():
        return _flatten(torch.load(folder / "engine.pt", weights_only=True))
    states = sorted((folder / "deepspeed").glob("*.pt"))
    return {f"{p.name}/{k}": v for p in states
            for k, v in _flatten(torch.load(p, weights_only=False)).items()}


def assert_same_tensors(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    different = [k for k in got if not torch.equal(got[k], expected[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def _flatten(tree, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    if isinstance(tree, list | tuple):
        tree = dict(enumerate(tree))
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items()
                for k, v in _flatten(sub, f"{prefix}/{key}").items()}
    return {}

