"""Engines behind one small interface: DistributedDataParallel or DeepSpeed.

    engine = build_engine(model, cfg, run, env)     # the model already has synchronized BN
    loss, logits = engine.forward_backward(images, labels, boundary)   # every micro-batch
    engine.step()                                    # after the last one (boundary=True)
    engine.save(folder) / engine.load(folder)        # collective: call on every rank

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

from pipeline.config import Config
from pipeline.dist import DistEnv
from pipeline.resolve import Derived

AMP_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Engine(Protocol):
    module: nn.Module  # the bare network, for evaluation and inspection
    optimizer: torch.optim.Optimizer  # its param_groups take the scheduled lr

    def forward_backward(self, images: torch.Tensor, labels: torch.Tensor,
                         boundary: bool) -> tuple[torch.Tensor, torch.Tensor]: ...
    def step(self) -> None: ...
    def save(self, folder: Path) -> None: ...
    def load(self, folder: Path) -> None: ...


def build_engine(model: nn.Module, cfg: Config, run: Derived, env: DistEnv) -> Engine:
    if cfg.dist.engine == "deepspeed":
        from pipeline.engines.deepspeed_engine import DeepSpeedEngine
        return DeepSpeedEngine(model, cfg, run, env)
    from pipeline.engines.ddp import DDPEngine
    return DDPEngine(model, cfg, run, env)


def criterion(cfg: Config):
    """Cross-entropy in at least fp32 (bf16/fp16 logits are upcast), with the configured
    label smoothing."""
    smoothing = cfg.optim.label_smoothing

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return nn.functional.cross_entropy(logits, labels, label_smoothing=smoothing)

    return loss
