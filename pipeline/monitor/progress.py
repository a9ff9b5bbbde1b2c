"""The console's progress line, with the time per epoch and the time left.

    clock = ProgressClock(run)
    log.info("%s", clock.line(record))   # a train record of meter.py

    step 1200/112590 (epoch 1.0 of 90): loss 5.1234, top-1 0.083, lr 0.4, 9,612 img/s
    (1,201/GPU), data wait 0.4%, 0.107 s/step; epoch 2m13s, left 3h18m

The time left counts training steps only (evaluations add theirs), from the mean step
time of this session after its first interval (which holds the start-up and compilation).
"""

from __future__ import annotations

import time

from pipeline.resolve import Derived


class ProgressClock:
    def __init__(self, run: Derived):
        self.run = run
        self.since: tuple[float, int] | None = None  # (time, step) after the first interval

    def seconds_per_step(self, step: int, fallback: float) -> float:
        now = time.monotonic()
        if self.since is None:
            self.since = (now, step)
            return fallback
        then, first = self.since
        return (now - then) / (step - first) if step > first else fallback

    def line(self, record: dict) -> str:
        run, step = self.run, record["step"]
        per_step = self.seconds_per_step(step, record["step_time_s"])
        left = (run.total_steps - step) * per_step
        epochs = run.total_steps / run.steps_per_epoch
        return (f"step {step}/{run.total_steps} (epoch {record['epoch']:.2f} of {epochs:g}): "
                f"loss {record['train/loss']:.4f}, top-1 {record['train/top1']:.3f}, "
                f"lr {record['lr']:.4g}, {record['images_per_s']:,.0f} img/s "
                f"({record['images_per_s_per_gpu']:,.0f}/GPU), data wait "
                f"{100 * record['data_wait_fraction']:.1f}%, {per_step:.3g} s/step; "
                f"epoch {duration(run.steps_per_epoch * per_step)}, left {duration(left)}")


def duration(seconds: float) -> str:
    """3h18m, 2m13s or 41s: the two largest units."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
