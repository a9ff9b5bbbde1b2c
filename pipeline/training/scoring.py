"""Saved weights scored on the val shards: the engine of python -m pipeline.evaluate.

    saved = read_weights(folder)          # a weights folder or a trainer checkpoint step-N/
    cfg = load_config(saved.config_file(), overrides)
    metrics = measure(cfg, saved, where)  # the trainer's val metrics, + val/images_per_s
    print(describe(metrics, where))

The val loader, the network and the evaluation are the trainer's (build_val_loader,
assembly.network, validation.evaluate), so the number is the one training reports for
these weights, over every val image once. Under torchrun the ranks share the val set.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import nn

from pipeline.config import Config
from pipeline.data import build_val_loader
from pipeline.dist.group import init_distributed, shutdown
from pipeline.models.weights import (
    INFO,
    SavedWeights,
    WeightsError,
    is_weights_folder,
    read_weights_folder,
)
from pipeline.resolve import autocast_dtype, channels_last
from pipeline.training.assembly import network
from pipeline.training.checkpoint import TRAINER, CheckpointError, is_checkpoint, network_weights
from pipeline.training.validation import evaluate


def read_weights(folder: str | Path) -> SavedWeights:
    """The network's weights and the config they need, from either kind of folder."""
    folder = Path(folder)
    if is_weights_folder(folder):
        return read_weights_folder(folder)
    if is_checkpoint(folder):
        try:
            state, config = network_weights(folder)
        except CheckpointError as err:
            raise WeightsError(str(err)) from None
        return SavedWeights(state, yaml.safe_load(config), "trainer checkpoint")
    what = "no such folder" if not folder.exists() else f"neither {INFO} nor {TRAINER} is there"
    raise WeightsError(f"{folder}: {what}; give a folder written by `python -m pipeline.models "
                       "import-caffe-port` or a trainer checkpoint runs/NAME/checkpoints/step-N")


def measure(cfg: Config, saved: SavedWeights, where: str = "the checkpoint") -> dict:
    """The trainer's val metrics for `saved`, plus val/seconds and val/images_per_s."""
    own_group = not dist.is_initialized()  # a caller's process group stays up
    env = init_distributed(cfg.dist)
    try:
        loader = build_val_loader(cfg.data, env.rank, env.world_size, env.device)
        model = load_network(cfg, loader.split.num_classes, saved, where)
        layout = torch.channels_last if channels_last(cfg) else torch.contiguous_format
        model = model.to(env.device, memory_format=layout)
        started = time.perf_counter()
        metrics = evaluate(model, loader, autocast_dtype(cfg.precision.autocast))
        seconds = time.perf_counter() - started
    finally:
        if own_group:
            shutdown(env)
    return {**metrics, "val/seconds": seconds, "val/images_per_s": metrics["val/images"] / seconds}


def load_network(cfg: Config, num_classes: int, saved: SavedWeights, where: str) -> nn.Module:
    """The network the config describes, with the saved weights: every key and shape."""
    model = network(cfg.model, num_classes)
    expected = model.state_dict().keys()
    missing = [k for k in expected if k not in saved.state]
    unexpected = [k for k in saved.state if k not in expected]
    if missing or unexpected:
        raise WeightsError(f"{where} ({saved.kind}) does not fit the network model.* describes: "
                           f"{len(missing)} keys missing (first: {missing[:3]}), "
                           f"{len(unexpected)} unexpected (first: {unexpected[:3]}); drop the "
                           "model.* overrides that change the network")
    try:
        model.load_state_dict(saved.state)
    except RuntimeError as err:  # a shape: "size mismatch for fc.weight: ..."
        lines = str(err).strip().splitlines()
        raise WeightsError(f"{where} ({saved.kind}) does not fit the network model.* "
                           f"describes: {lines[-1].strip()}") from err
    return model


def describe(metrics: dict, where: str) -> str:
    return (f"{where}: val top-1 {metrics['val/top1']:.4f}, top-5 {metrics['val/top5']:.4f}, "
            f"loss {metrics['val/loss']:.4f} over {metrics['val/images']} images; "
            f"{metrics['val/images_per_s']:.1f} images/s ({metrics['val/seconds']:.1f} s)")
