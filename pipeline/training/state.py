"""What the loop counts, saved with every checkpoint (trainer.pt)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field


def new_wandb_id() -> str:
    return secrets.token_hex(4)  # W&B's id format: 8 lowercase characters


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done; the epoch is Derived.epoch_of(step)
    best_top1: float | None = None
    validated_step: int = 0  # the step of the last validation (0: none yet)
    images_seen: int = 0  # by all ranks: the x-axis that compares world sizes
    starts: int = 0  # resumes and requeues so far (metrics rows say which start wrote them)
    # Chosen with the run, kept by every checkpoint: a resumed or requeued job continues
    # the same W&B run.
    wandb_id: str = field(default_factory=new_wandb_id)
