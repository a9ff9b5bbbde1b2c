"""The learning rate as a pure function of the optimizer step.

    lr = lr_at(step, cfg.schedule, run)

Linear warmup from `warmup_start` x peak over `run.warmup_steps`, then one decay:
cosine to `final_fraction` x peak at `run.total_steps`; the paper's exponential decay
(x `exp_rate` every `exp_every_epochs`, smooth or staircase), counted from the end of
warmup; step decay (x `step_gamma` at each milestone epoch, counted from step 0); or
constant. Resume needs nothing but the step.
"""

from __future__ import annotations

import bisect
import math

from pipeline.config import ScheduleConfig
from pipeline.resolve import Derived


def lr_at(step: int, cfg: ScheduleConfig, run: Derived) -> float:
    peak = run.lr
    if step < run.warmup_steps:
        return peak * (cfg.warmup_start + (1 - cfg.warmup_start) * step / run.warmup_steps)
    after = step - run.warmup_steps
    if cfg.decay == "cosine":
        progress = min(1.0, after / max(1, run.total_steps - run.warmup_steps))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return peak * (cfg.final_fraction + (1 - cfg.final_fraction) * cosine)
    if cfg.decay == "exponential":
        periods = after / (cfg.exp_every_epochs * run.steps_per_epoch)
        return peak * cfg.exp_rate ** (math.floor(periods) if cfg.exp_staircase else periods)
    if cfg.decay == "step":
        passed = bisect.bisect_right(list(cfg.milestones), run.epochs_done(step))
        return peak * cfg.step_gamma ** passed
    return peak
