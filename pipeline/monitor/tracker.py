"""Where metrics go: runs/<name>/metrics.jsonl always, Weights & Biases when enabled.

    tracker = Tracker(cfg.log, run_dir, env, name, wandb_id, config)   # rank 0 writes
    tracker.log({"step": 100, "train/loss": 2.3, ...})

The W&B run id comes from TrainState, and so from every checkpoint: a resumed or
requeued job continues the same W&B run. The API key comes from the environment
(WANDB_API_KEY or `wandb login`), never from the config. `log.wandb: offline` writes the
run under runs/<name>/wandb/ for a later `wandb sync`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.config import LogConfig
from pipeline.launch.distributed import DistEnv

log = logging.getLogger(__name__)


class Tracker:
    def __init__(self, cfg: LogConfig, run_dir: Path, env: DistEnv, name: str, wandb_id: str,
                 config: dict[str, Any]):
        """`config`: what W&B shows as the run's config (the tree and derived values)."""
        self.active = env.is_main
        self.wandb = None
        if not self.active:
            return
        self.metrics = open(run_dir / "metrics.jsonl", "a")
        if cfg.wandb != "disabled":
            try:
                self.wandb = _start_wandb(cfg, run_dir, name, wandb_id, config)
            except Exception as err:  # wandb raises its own kinds, and network errors
                log.warning("W&B did not start (%s: %s); the run goes on without it, and "
                            "metrics.jsonl has every metric", type(err).__name__, err)

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


def _start_wandb(cfg: LogConfig, run_dir: Path, name: str, wandb_id: str,
                 config: dict[str, Any]):
    import wandb

    run = wandb.init(project=cfg.project, entity=cfg.entity or None, name=name, id=wandb_id,
                     resume="allow", mode=cfg.wandb, dir=str(run_dir), config=config,
                     tags=list(cfg.tags))
    log.info("W&B run %s (%s)", run.id, cfg.wandb)
    return run
