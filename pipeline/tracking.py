"""Where metrics go: runs/<name>/metrics.jsonl always, Weights & Biases when enabled.

    tracker = Tracker(cfg, run_dir, env, state, run.as_dict())   # rank 0 writes; others no-op
    tracker.log({"step": 100, "train/loss": 2.3, ...})

The W&B run id is kept in TrainState and so in every checkpoint: a resumed or requeued
job continues the same W&B run. The API key comes from the environment (WANDB_API_KEY or
`wandb login`), never from the config. `log.wandb: offline` writes the run under
runs/<name>/wandb/ for a later `wandb sync`.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

from pipeline.checkpoint import TrainState
from pipeline.config import Config
from pipeline.dist import DistEnv

log = logging.getLogger(__name__)


class Tracker:
    def __init__(self, cfg: Config, run_dir: Path, env: DistEnv, state: TrainState,
                 derived: dict[str, Any]):
        self.active = env.is_main
        self.wandb = None
        if not self.active:
            return
        self.metrics = open(run_dir / "metrics.jsonl", "a")
        if cfg.log.wandb != "disabled":
            self.wandb = _start_wandb(cfg, run_dir, state, derived)

    def log(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if k != "step"},
                           step=record["step"])

    def close(self) -> None:
        if not self.active:
            return
        self.metrics.close()
        if self.wandb is not None:
            self.wandb.finish()


def _start_wandb(cfg: Config, run_dir: Path, state: TrainState, derived: dict[str, Any]):
    import wandb
    from omegaconf import OmegaConf

    if state.wandb_id is None:
        state.wandb_id = secrets.token_hex(4)  # W&B's id format: 8 lowercase characters
    config = {**OmegaConf.to_container(OmegaConf.structured(cfg)), "derived": derived}
    run = wandb.init(project=cfg.log.project, entity=cfg.log.entity or None, name=cfg.name,
                     id=state.wandb_id, resume="allow", mode=cfg.log.wandb, dir=str(run_dir),
                     config=config, tags=list(cfg.log.tags))
    log.info("W&B run %s (%s)", run.id, cfg.log.wandb)
    return run
