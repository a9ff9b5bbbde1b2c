"""The run's derived values, computed once from the config, the world and the data.

    run = resolve(cfg, world_size=64, train_samples=1_281_167, gpus_per_node=8)
    log.info(run.describe())   # printed at start, saved to runs/<name>/derived.json

Nothing else computes a global batch, a scaled learning rate or a step count: the loop,
the schedule and the checkpoints read them from here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from pipeline.config import Config, OptimConfig
from pipeline.data import epochs
from pipeline.models.syncbn import sync_group_size


@dataclass(frozen=True)
class Derived:
    world_size: int
    per_gpu_batch: int
    accumulation: int
    global_batch: int  # images per optimizer step, all ranks and micro-batches together
    lr: float  # peak learning rate, after the scaling rule
    steps_per_epoch: int  # optimizer steps
    total_steps: int
    warmup_steps: int
    train_samples: int
    samples_per_epoch: int  # used per epoch: the remainder of the global batch is dropped
    bn_group: int  # ranks whose BN statistics are pooled
    bn_batch: int  # images in one BN statistic

    def describe(self) -> str:
        return (f"world {self.world_size} x batch {self.per_gpu_batch} x accumulation "
                f"{self.accumulation} = global batch {self.global_batch}; lr {self.lr:.6g}; "
                f"{self.steps_per_epoch} steps/epoch ({self.samples_per_epoch} of "
                f"{self.train_samples} samples), {self.total_steps} steps, warmup "
                f"{self.warmup_steps}; BN over {self.bn_group} ranks = {self.bn_batch} images")

    def as_dict(self) -> dict:
        return asdict(self)


def scaled_lr(optim: OptimConfig, global_batch: int) -> float:
    """The scaling rule: Goyal et al.'s linear rule, or its square root (Krizhevsky 2014)."""
    ratio = global_batch / optim.reference_batch
    factor = {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[optim.scaling]
    return optim.base_lr * factor


def resolve(cfg: Config, world_size: int, train_samples: int,
            gpus_per_node: int | None = None) -> Derived:
    """Derived values for `world_size` ranks over `train_samples` images."""
    batch, accumulation = cfg.data.batch_size, cfg.optim.accumulation
    loader_steps = epochs.steps_per_epoch(train_samples, batch, world_size)
    steps_per_epoch = loader_steps // accumulation
    if steps_per_epoch == 0:
        raise ValueError(f"optim.accumulation = {accumulation} needs more micro-batches than the "
                         f"{loader_steps} an epoch of {train_samples} samples gives per rank")
    global_batch = batch * world_size * accumulation
    total_steps = max(1, round(cfg.schedule.epochs * steps_per_epoch))
    group = sync_group_size(cfg.model.sync_group, world_size, gpus_per_node)
    return Derived(
        world_size=world_size, per_gpu_batch=batch, accumulation=accumulation,
        global_batch=global_batch, lr=scaled_lr(cfg.optim, global_batch),
        steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        warmup_steps=min(total_steps, round(cfg.schedule.warmup_epochs * steps_per_epoch)),
        train_samples=train_samples, samples_per_epoch=steps_per_epoch * global_batch,
        bn_group=group if cfg.model.bn else 0, bn_batch=group * batch if cfg.model.bn else 0)
