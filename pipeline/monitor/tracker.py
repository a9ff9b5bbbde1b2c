"""Where metrics go: runs/<name>/metrics.jsonl always, Weights & Biases when enabled.

    tracker = Tracker(cfg.log, run_dir, env, name, wandb_id, cfg_dict)   # before the build
    tracker.begin(derived, step, images_seen, validated, session, start)   # after the resume
    tracker.log({"step": 100, "train/loss": 2.3, ...})
    tracker.image("samples/train", path, step) / tracker.alert(Alert(...))

Rank 0 writes; on other ranks every call does nothing. W&B is started once, with a
timeout (log.wandb_timeout_s): a missing key, no network or a slow server is a warning,
and training goes on with metrics.jsonl (`python -m pipeline.upload` sends the
run later). The W&B run id comes from TrainState, and so from every checkpoint: a
resumed or requeued job continues the same W&B run.

Every row carries `step`, `epoch` and `images_seen`; W&B plots against `step` (declared
with define_metric, so rows are logged without W&B's own step counter and a resume never
hits its "steps must increase" rule), and `epoch` or `images_seen` can be chosen as the
x-axis, which compares runs of different world sizes. Rows W&B already received before a
crash (history.rewind) are not sent again, so every step is there once.

A start after failures (failures.jsonl, written by slurm/train_64gpu.sh) raises an alert
for each one since the previous start and keeps their count in the W&B summary
(`failures`).

The API key comes from WANDB_API_KEY or the user's netrc (`wandb login`), never from the
config, and nothing the run writes holds it (tests/monitor/test_wandb_run.py checks).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pipeline.config import LogConfig
from pipeline.dist.group import DistEnv
from pipeline.dist.recovery import read_failures
from pipeline.monitor.alerts import Alert
from pipeline.monitor.history import Logged, read_rows, rewind

log = logging.getLogger(__name__)
X_AXES = ("step", "epoch", "images_seen")
SHAPE = ("world_size", "global_batch", "steps_per_epoch")  # each start's, in starts.jsonl


class Tracker:
    def __init__(self, cfg: LogConfig, run_dir: Path, env: DistEnv, name: str, wandb_id: str,
                 config: dict[str, Any]):
        """`config`: the config tree, W&B's run config (begin adds the derived values)."""
        self.cfg, self.run_dir = cfg, run_dir
        self.active = env.is_main
        self.wandb, self.metrics, self.logged, self.session = None, None, Logged(), 0
        self.alerted: dict[str, float] = {}  # title -> when last raised
        if self.active and cfg.wandb != "disabled":
            self.wandb = _start_wandb(cfg, run_dir, name, wandb_id, config)

    def begin(self, derived: dict[str, Any], step: int, images_seen: int, validated: bool,
              session: int, start: dict[str, Any]) -> None:
        """After the resume (or the start from scratch): the run's derived values and this
        start's facts, and metrics.jsonl cut back to the checkpoint (history.rewind).
        `validated`: the checkpoint's step was validated; `session`: the start's number."""
        if not self.active:
            return
        path = self.run_dir / "metrics.jsonl"
        self.logged = rewind(path, images_seen, validated)
        self.metrics = open(path, "a")
        self.session = session
        before = read_rows(self.run_dir / "starts.jsonl")
        failures = read_failures(self.run_dir)
        with open(self.run_dir / "starts.jsonl", "a") as f:
            f.write(json.dumps({"session": session, "step": step, "images_seen": images_seen,
                                "time": time.time(), **start,
                                **{k: derived.get(k) for k in SHAPE}}) + "\n")
        if self.wandb is not None:
            self.wandb.config.update({"derived": derived, "start": start},
                                     allow_val_change=True)
            self.wandb.summary["failures"] = len(failures)
        since = before[-1]["time"] if before else 0.0
        for failure in (f for f in failures if f["time"] > since):
            self.alert(Alert("rank failure", f"job {failure['job']}: {failure['why']}"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        row = {**record, "time": time.time(), "session": self.session}
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()
        if self.wandb is not None and not self.logged.has(row):
            self.wandb.log(row)

    def image(self, key: str, path: Path, step: int, images_seen: int) -> None:
        if self.active and self.wandb is not None:
            import wandb
            self.wandb.log({"step": step, "images_seen": images_seen,
                            key: wandb.Image(str(path), caption=path.name)})

    def alert(self, alert: Alert) -> None:
        """A warning line and wandb.alert, each title at most once per log.alert_every_s
        (a stalled node would otherwise raise one every log interval)."""
        if not self.active:
            return
        now, last = time.monotonic(), self.alerted.get(alert.title)
        if last is not None and now - last < self.cfg.alert_every_s:
            log.info("(alert repeated, not raised again yet) %s: %s", alert.title, alert.text)
            return
        self.alerted[alert.title] = now
        log.warning("ALERT %s: %s", alert.title, alert.text)
        if self.wandb is not None:
            try:
                self.wandb.alert(title=alert.title, text=alert.text, level=alert.level,
                                 wait_duration=self.cfg.alert_every_s)
            except Exception as err:  # offline mode and old servers refuse alerts
                log.info("W&B did not take the alert (%s)", err)

    def close(self) -> None:
        if not self.active:
            return
        if self.metrics is not None:
            self.metrics.close()
        if self.wandb is not None:
            self.wandb.finish()


def _start_wandb(cfg: LogConfig, run_dir: Path, name: str, wandb_id: str,
                 config: dict[str, Any]):
    import wandb

    started = time.monotonic()
    try:
        run = wandb.init(project=cfg.project, entity=cfg.entity or None, name=name,
                         id=wandb_id, resume="allow", mode=cfg.wandb, dir=str(run_dir),
                         config=config, tags=list(cfg.tags),
                         settings=wandb.Settings(init_timeout=cfg.wandb_timeout_s))
    except Exception as err:  # wandb raises its own kinds, and network errors
        log.warning("W&B did not start after %.0f s (%s: %s); training goes on without it. "
                    "metrics.jsonl has every metric: `python -m pipeline.upload %s` "
                    "sends the run to W&B later", time.monotonic() - started,
                    type(err).__name__, str(err).splitlines()[0] if str(err) else "", run_dir)
        return None
    define_axes(run)
    log.info("W&B run %s (%s)", run.id, cfg.wandb)
    return run


def define_axes(run) -> None:
    """Every metric plotted against `step`; `epoch` and `images_seen` selectable."""
    for axis in X_AXES:
        run.define_metric(axis)
    run.define_metric("*", step_metric="step")
    run.define_metric("val/top1", step_metric="step", summary="max")
