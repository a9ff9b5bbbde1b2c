"""One way to build a training: config -> loaders -> derived values -> model -> engine.

    parts = assemble(cfg, env)                       # the trainer, benchmarks, launch tools
    parts.train, parts.val, parts.run, parts.engine
    parts = assemble(cfg, env, DataShape(1000, 10))  # no shards: model and engine only

Every user of a training's parts (the trainer, the benchmarks, the engine tests, preflight
and the paper's experiments) builds them here, so they all get the same seeds, BN groups,
memory format and engine settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from data_prep.manifest import ShardError, load_split
from pipeline.config import Config, DataConfig, ModelConfig
from pipeline.data import TrainLoader, ValLoader, build_train_loader, build_val_loader
from pipeline.data.epochs import derive_seed
from pipeline.data.staging import stage_shards
from pipeline.dist.group import DistEnv, rank0_checks
from pipeline.models import create_model
from pipeline.models.syncbn import build_sync_group, convert_sync_batchnorm
from pipeline.resolve import Derived, resolve
from pipeline.training.engines import Engine, build_engine

SPLITS = ("train", "val")


@dataclass(frozen=True)
class DataShape:
    """What the model and the derived values need to know of the data."""

    train_samples: int
    num_classes: int


@dataclass
class Parts:
    data: DataConfig  # what the loaders read (data.shards is the node-local copy if staged)
    train: TrainLoader | None  # None when assembled from a DataShape
    val: ValLoader | None
    run: Derived
    engine: Engine

    @property
    def model(self) -> nn.Module:
        return self.engine.module


def assemble(cfg: Config, env: DistEnv, data: DataShape | None = None) -> Parts:
    """The loaders over cfg.data.shards or their node-local copy (unless `data` stands in
    for them), the derived values, BN-Inception with synchronized BN, and its engine.
    Collective."""
    seed_everything(cfg.seed, cfg.precision.deterministic)
    data_cfg, train, val = cfg.data, None, None
    if data is None:
        data_cfg = stage_shards(cfg.data, env)
        check_shards_once(data_cfg.shards, env)
        train = build_train_loader(data_cfg, env.rank, env.world_size, env.device,
                                   hash_indexes=False)
        val = build_val_loader(data_cfg, env.rank, env.world_size, env.device,
                               hash_indexes=False)
        data = DataShape(train.split.num_samples, train.split.num_classes)
    run = resolve(cfg, env.world_size, data.train_samples, env.ranks_per_node)
    model = build_model(cfg.model, data.num_classes, run, env)
    torch.manual_seed(derive_seed(cfg.seed, 1, env.rank))  # dropout differs per rank
    return Parts(data_cfg, train, val, run, build_engine(model, run, env))


def check_shards_once(root: str, env: DistEnv) -> None:
    """Collective: rank 0 runs the loader's full checks (the indexes' sha256 included) and
    every rank raises its ShardError, so the other ranks need only cheap ones."""
    rank0_checks(env, lambda: [load_split(root, split) for split in SPLITS], ShardError)


def build_model(cfg: ModelConfig, num_classes: int, run: Derived, env: DistEnv) -> nn.Module:
    """The network on its device and memory format, with BN synchronized over its group."""
    layout = torch.channels_last if run.channels_last else torch.contiguous_format
    model = network(cfg, num_classes).to(env.device, memory_format=layout)
    group = build_sync_group(max(1, run.bn_group))  # a size: resolve checked it
    return convert_sync_batchnorm(model, group)  # model.compile: the engine compiles it


def network(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The bare network the model section describes, for the shards' `num_classes`."""
    if cfg.num_classes and cfg.num_classes != num_classes:
        raise ValueError(f"model.num_classes = {cfg.num_classes}, but the shards' "
                         f"classes.json has {num_classes} classes")
    return create_model(cfg.name, num_classes=num_classes, bn=cfg.bn, act=cfg.act,
                        dropout=cfg.dropout, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum,
                        separable_stem=cfg.separable_stem)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Same initial weights on every rank; deterministic kernels when asked (cuBLAS's
    workspace: precision.prepare_determinism, before CUDA starts)."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
