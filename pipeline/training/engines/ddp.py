"""DistributedDataParallel with torch.autocast and, for fp16, a gradient scaler."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.dist.group import DistEnv
from pipeline.resolve import Derived
from pipeline.training.loss import criterion
from pipeline.training.optim import build_optimizer
from pipeline.training.precision import autocast
from pipeline.training.saving import save_torch

STATE_FILE = "engine.pt"


class DDPEngine:
    def __init__(self, model: nn.Module, run: Derived, env: DistEnv):
        spec = run.engine
        self.module, self.env, self.accumulation = model, env, run.accumulation
        self.optimizer = build_optimizer(model, spec.optim, run.lr)
        # DDP re-lays its gradient buckets after a process's first step (by the order the
        # gradients became ready); a resumed process would then sum its first step in
        # another order than the uninterrupted run did, and with 3+ ranks float sums
        # differ. fixed_buckets (precision.deterministic) keeps the first layout for good:
        # DDP skips the re-layout when it looks for unused parameters, at the cost of one
        # walk over the autograd graph per step (and a warning that finds none unused).
        self.model = self.ddp = DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None,
            bucket_cap_mb=spec.bucket_mb, gradient_as_bucket_view=True,
            find_unused_parameters=spec.fixed_buckets)
        if spec.compile:  # around DDP, so the bare module's state dict keeps its keys
            self.model = torch.compile(self.model)
        self.amp_dtype = spec.autocast_dtype
        self.scaler = torch.amp.GradScaler(env.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.criterion = criterion(spec.optim.label_smoothing)
        self.grad_clip = spec.optim.grad_clip

    def forward_backward(self, images: torch.Tensor, labels: torch.Tensor,
                         boundary: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # Off the boundary DDP must skip its all-reduce from the forward on (no_sync).
        sync = contextlib.nullcontext() if boundary else self.ddp.no_sync()
        with sync:
            with autocast(self.env.device, self.amp_dtype):
                logits = self.model(images)
            loss = self.criterion(logits, labels)
            self.scaler.scale(loss / self.accumulation).backward()
        return loss.detach(), logits.detach()

    def step(self, measure_norm: bool = False) -> torch.Tensor | None:
        """The global gradient norm (before clipping) when clipping or asked to measure:
        every rank holds the averaged gradients, so the local norm is the global one."""
        norm = None
        if self.grad_clip > 0 or measure_norm:
            self.scaler.unscale_(self.optimizer)  # a no-op without fp16's scaler
            if self.grad_clip > 0:
                norm = nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
            else:
                norm = nn.utils.get_total_norm(
                    [p.grad for p in self.module.parameters() if p.grad is not None])
        self.scaler.step(self.optimizer)  # skipped when fp16 gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def loss_scale(self) -> float | None:
        return self.scaler.get_scale() if self.scaler.is_enabled() else None

    def save(self, folder: Path) -> None:
        """Rank 0 writes the state: every rank holds the same."""
        if self.env.is_main:
            save_torch(folder / STATE_FILE, {"model": self.module.state_dict(),
                                             "optimizer": self.optimizer.state_dict(),
                                             "scaler": self.scaler.state_dict()})

    def load(self, folder: Path) -> None:
        state = torch.load(folder / STATE_FILE, map_location=self.env.device, weights_only=True)
        self.module.load_state_dict(state["model"])  # strict: a mismatch is an error
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
