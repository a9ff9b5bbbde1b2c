"""DistributedDataParallel with torch.autocast and, for fp16, a gradient scaler."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.config import Config
from pipeline.dist import DistEnv
from pipeline.engines import AMP_DTYPES, criterion
from pipeline.optim import build_optimizer
from pipeline.resolve import Derived

STATE_FILE = "engine.pt"


class DDPEngine:
    def __init__(self, model: nn.Module, cfg: Config, run: Derived, env: DistEnv):
        self.module, self.env, self.accumulation = model, env, run.accumulation
        self.optimizer = build_optimizer(model, cfg.optim, run.lr)
        self.model = self.ddp = DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None,
            bucket_cap_mb=cfg.dist.bucket_mb, gradient_as_bucket_view=True)
        if cfg.model.compile:  # around DDP, so the bare module's state dict keeps its keys
            self.model = torch.compile(self.model)
        self.amp_dtype = AMP_DTYPES[cfg.precision.autocast]
        self.scaler = torch.amp.GradScaler(env.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.criterion, self.grad_clip = criterion(cfg), cfg.optim.grad_clip

    def forward_backward(self, images: torch.Tensor, labels: torch.Tensor,
                         boundary: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # Off the boundary DDP must skip its all-reduce from the forward on (no_sync).
        sync = contextlib.nullcontext() if boundary else self.ddp.no_sync()
        with sync:
            with torch.autocast(self.env.device.type, dtype=self.amp_dtype,
                                enabled=self.amp_dtype is not None):
                logits = self.model(images)
            loss = self.criterion(logits, labels)
            self.scaler.scale(loss / self.accumulation).backward()
        return loss.detach(), logits.detach()

    def step(self) -> None:
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)  # skipped when fp16 gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def save(self, folder: Path) -> None:
        """Rank 0 writes the state: every rank holds the same."""
        if self.env.is_main:
            torch.save({"model": self.module.state_dict(),
                        "optimizer": self.optimizer.state_dict(),
                        "scaler": self.scaler.state_dict()}, folder / STATE_FILE)

    def load(self, folder: Path) -> None:
        state = torch.load(folder / STATE_FILE, map_location=self.env.device, weights_only=True)
        self.module.load_state_dict(state["model"])  # strict: a mismatch is an error
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
