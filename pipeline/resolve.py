"""The run's derived values and cross-section decisions, made once from the config, the
world and the data.

    run = resolve(cfg, world_size=64, train_samples=1_281_167, ranks_per_node=8)
    log.info(run.describe())   # printed at start, saved to runs/<name>/derived.json
    run.epoch_of(step), run.lr, run.engine.zero_stage, run.autocast_dtype

Nothing else computes a global batch, a scaled learning rate, a step count, the epoch of
a step, the BN group or the memory format: the loop, the schedule, the engines and the
checkpoints read them from here. Combinations of sections that cannot work together
(bf16 images into fp32 convs, a ZeRO stage under DDP) are refused here, naming both keys.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from pipeline.config import Config, OptimConfig
from pipeline.data import epochs
from pipeline.data.batches import TORCH_DTYPES
from pipeline.models.syncbn import sync_group_size


@dataclass(frozen=True)
class EngineSpec:
    """The engine's settings, gathered from the optim, precision, dist and model sections;
    with the batch sizes and the lr of Derived, the engines read nothing else."""

    name: str  # ddp | deepspeed
    optim: OptimConfig  # optimizer, decay groups, label smoothing, clipping
    autocast: str  # float32 (off) | bfloat16 | float16
    zero_stage: int
    bucket_mb: int
    compile: bool
    fixed_buckets: bool  # precision.deterministic: one all-reduce order for good (DDP)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return autocast_dtype(self.autocast)


def autocast_dtype(autocast: str) -> torch.dtype | None:
    """precision.autocast as a dtype; None when autocast is off (float32)."""
    return None if autocast == "float32" else TORCH_DTYPES[autocast]


def channels_last(cfg: Config) -> bool:
    """The model's memory format. DeepSpeed broadcasts and flattens parameters as plain
    contiguous memory, so its weights stay NCHW; its convs still run NHWC when the images
    are channels_last (PyTorch follows the input)."""
    return cfg.data.channels_last and cfg.dist.engine != "deepspeed"


@dataclass(frozen=True)
class Derived:
    world_size: int
    per_gpu_batch: int
    accumulation: int
    global_batch: int  # images per optimizer step, all ranks and micro-batches together
    lr: float  # peak learning rate, after the scaling rule
    batches_per_epoch: int  # loader batches of one rank (micro-batches)
    steps_per_epoch: int  # optimizer steps: batches_per_epoch // accumulation
    total_steps: int
    warmup_steps: int
    train_samples: int
    samples_per_epoch: int  # used per epoch: the remainder of the global batch is dropped
    bn_group: int  # ranks whose BN statistics are pooled (0: no BN)
    bn_batch: int  # images in one BN statistic
    channels_last: bool  # the model's memory format (DeepSpeed keeps NCHW weights)
    precise_bn_batches: int  # eval.precise_bn_batches, at most one epoch's batches
    engine: EngineSpec
    warnings: tuple[str, ...] = ()  # settings taken differently from what was asked


    def epoch_of(self, step: int) -> int:
        """The epoch that optimizer step `step` (0-based count of steps done) falls in."""
        return step // self.steps_per_epoch

    def epochs_done(self, step: int) -> float:
        """Epochs of training after `step` optimizer steps, fractional."""
        return step / self.steps_per_epoch

    def is_epoch_end(self, step: int) -> bool:
        return step > 0 and step % self.steps_per_epoch == 0

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return self.engine.autocast_dtype

    def describe(self) -> str:
        return (f"world {self.world_size} x batch {self.per_gpu_batch} x accumulation "
                f"{self.accumulation} = global batch {self.global_batch}; lr {self.lr:.6g}; "
                f"{self.steps_per_epoch} steps/epoch ({self.samples_per_epoch} of "
                f"{self.train_samples} samples), {self.total_steps} steps, warmup "
                f"{self.warmup_steps}; BN over {self.bn_group} ranks = {self.bn_batch} images; "
                f"{self.engine.name}, autocast {self.engine.autocast}, "
                f"{'channels_last' if self.channels_last else 'NCHW'} weights")

    def as_dict(self) -> dict:
        return asdict(self)


def scaled_lr(optim: OptimConfig, global_batch: int) -> float:
    """The scaling rule: Goyal et al.'s linear rule, or its square root (Krizhevsky 2014)."""
    ratio = global_batch / optim.reference_batch
    factor = {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[optim.scaling]
    return optim.base_lr * factor


def check_combination(cfg: Config) -> None:
    """Refuses settings of different sections that cannot work together."""
    data_dtype, autocast = cfg.data.dtype, cfg.precision.autocast
    if data_dtype not in ("float32", autocast):
        raise ValueError(
            f"data.dtype = {data_dtype} with precision.autocast = {autocast}: the convs "
            f"compute in {autocast} and would not take {data_dtype} images; set data.dtype "
            f"to float32 or to {autocast}")
    if cfg.dist.zero_stage and cfg.dist.engine != "deepspeed":
        raise ValueError(f"dist.zero_stage = {cfg.dist.zero_stage} needs dist.engine = "
                         f"deepspeed (DDP has no ZeRO); set one or the other")


def resolve(cfg: Config, world_size: int, train_samples: int,
            ranks_per_node: int | None = None) -> Derived:
    """Derived values for `world_size` ranks over `train_samples` images."""
    check_combination(cfg)
    batch, accumulation = cfg.data.batch_size, cfg.optim.accumulation
    batches = epochs.batches_per_epoch(train_samples, batch, world_size)
    steps_per_epoch = batches // accumulation
    if steps_per_epoch == 0:
        raise ValueError(f"optim.accumulation = {accumulation} needs more micro-batches than the "
                         f"{batches} an epoch of {train_samples} samples gives per rank")
    global_batch = batch * world_size * accumulation
    total_steps = max(1, round(cfg.schedule.epochs * steps_per_epoch))
    if cfg.model.sync_bn == "node" and ranks_per_node is None:
        raise ValueError("model.sync_bn = node, but the launcher set RANK / WORLD_SIZE "
                         "without LOCAL_WORLD_SIZE, so the ranks per node are unknown: set "
                         "LOCAL_WORLD_SIZE, or model.sync_bn to the ranks per node")
    group = sync_group_size(cfg.model.sync_group, world_size, ranks_per_node)
    warnings = []
    precise_bn = min(cfg.eval.precise_bn_batches, batches)
    if precise_bn < cfg.eval.precise_bn_batches:
        warnings.append(f"eval.precise_bn_batches = {cfg.eval.precise_bn_batches}, but an "
                        f"epoch has {batches} batches per rank: precise BN uses {batches}")
    engine = EngineSpec(name=cfg.dist.engine, optim=cfg.optim, autocast=cfg.precision.autocast,
                        zero_stage=cfg.dist.zero_stage, bucket_mb=cfg.dist.bucket_mb,
                        compile=cfg.model.compile,
                        fixed_buckets=cfg.precision.deterministic)
    return Derived(
        world_size=world_size, per_gpu_batch=batch, accumulation=accumulation,
        global_batch=global_batch, lr=scaled_lr(cfg.optim, global_batch),
        batches_per_epoch=batches, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        warmup_steps=min(total_steps, round(cfg.schedule.warmup_epochs * steps_per_epoch)),
        train_samples=train_samples, samples_per_epoch=steps_per_epoch * global_batch,
        bn_group=group if cfg.model.bn else 0, bn_batch=group * batch if cfg.model.bn else 0,
        channels_last=channels_last(cfg),
        precise_bn_batches=precise_bn, engine=engine, warnings=tuple(warnings))
