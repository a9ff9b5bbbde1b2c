"""Engines behind one small interface: DistributedDataParallel or DeepSpeed.

    engine = build_engine(model, run, env)     # the model already has synchronized BN
    loss, logits = engine.forward_backward(images, labels, boundary)   # every micro-batch
    norm = engine.step(measure_norm)            # after the last one (boundary=True)
    engine.loss_scale()                         # fp16's gradient scale, else None
    engine.save(folder) / engine.load(folder)   # collective: call on every rank

An engine reads `run.engine` (pipeline.resolve.EngineSpec: optimizer, clipping,
autocast, ZeRO stage, bucket size, compile) and the run's batch sizes and lr, nothing else.
Both keep the weights and BN in fp32 and run the forward under torch.autocast for
bf16/fp16 (DeepSpeed through its `torch_autocast` section, not its whole-model casting);
fp16 adds a gradient scaler. Both average gradients over all ranks, skip the all-reduce on
inner micro-batches, and clip the global gradient norm when asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from pipeline.dist.group import DistEnv
from pipeline.resolve import Derived


class Engine(Protocol):
    module: nn.Module  # the bare network, for evaluation and inspection
    optimizer: torch.optim.Optimizer  # its param_groups take the scheduled lr

    def forward_backward(self, images: torch.Tensor, labels: torch.Tensor,
                         boundary: bool) -> tuple[torch.Tensor, torch.Tensor]: ...
    def step(self, measure_norm: bool = False) -> torch.Tensor | None: ...
    def loss_scale(self) -> float | None: ...
    def save(self, folder: Path) -> None: ...
    def load(self, folder: Path) -> None: ...


def build_engine(model: nn.Module, run: Derived, env: DistEnv) -> Engine:
    if run.engine.name == "deepspeed":
        from pipeline.training.engines.deepspeed_engine import DeepSpeedEngine
        return DeepSpeedEngine(model, run, env)
    from pipeline.training.engines.ddp import DDPEngine
    return DDPEngine(model, run, env)
