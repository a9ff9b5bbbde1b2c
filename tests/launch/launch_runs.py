"""The shared shape of the launch tests' trainings (tests/launch/conftest.py runs the
reference one)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from run_helpers import REPO

SMOKE = str(REPO / "configs" / "smoke_cpu.yaml")
STEPS = 12  # 400 images / (4 ranks x 4) = 25 steps per epoch; every stop is mid-epoch


def overrides(shards: Path, runs: Path, name: str) -> list[str]:
    """Small and quick: 32 px, 12 steps, checkpoints every 4, shards staged per node."""
    return [f"data.shards={shards}", f"runs_dir={runs}", f"name={name}",
            "data.image_size=32", "data.batch_size=4", f"schedule.epochs={STEPS / 25}",
            "eval.every_epochs=0", "checkpoint.every_steps=4", "dist.timeout_s=120",
            f"data.stage_dir={runs / 'stage'}"]


@dataclass(frozen=True)
class Reference:
    run_dir: Path
    status: int
    log: str
