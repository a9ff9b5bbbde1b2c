"""The optimizer: SGD with momentum as in the paper, or LARS for very large batches.

    optimizer = build_optimizer(model, cfg.optim, lr=run.lr)
    set_lr(optimizer, lr_at(step, cfg.schedule, run))     # every step

Parameters split by shape, not by name: weights of convs and the classifier (p.ndim > 1)
are decayed and, under LARS, adapted; BN gamma/beta and biases (p.ndim == 1) are neither,
unless `decay_norm_and_bias`. That is Goyal et al.'s and You et al.'s practice.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from pipeline.config import OptimConfig


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """[matrices and kernels, vectors]; the second group skips decay and LARS adaptation."""
    weights, vectors = [], []
    for p in model.parameters():
        if p.requires_grad:
            (weights if p.ndim > 1 else vectors).append(p)
    vector_decay = cfg.weight_decay if cfg.decay_norm_and_bias else 0.0
    return [{"params": weights, "weight_decay": cfg.weight_decay, "adapt": True},
            {"params": vectors, "weight_decay": vector_decay, "adapt": False}]


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                    trust=cfg.lars_trust)
    for group in groups:
        group.pop("adapt")
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017) on SGD with momentum.

    For a group with adapt=True each tensor's update d = g + wd * w is scaled by
    trust * ||w|| / ||d|| (1 where either norm is 0), then momentum and the global lr
    apply as in torch.optim.SGD. Groups with adapt=False are plain SGD.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9,
                 nesterov: bool = False, trust: float = 0.001, weight_decay: float = 0.0):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, trust=trust,
                        weight_decay=weight_decay, adapt=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict) -> None:
        d = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
        if group["adapt"]:
            w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
            ratio = torch.where((w_norm > 0) & (d_norm > 0),
                                group["trust"] * w_norm / d_norm, torch.ones_like(w_norm))
            d = d.mul(ratio)
        momentum = group["momentum"]
        if momentum:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = d.clone()
            else:
                state["momentum_buffer"].mul_(momentum).add_(d)
            buf = state["momentum_buffer"]
            d = d.add(buf, alpha=momentum) if group["nesterov"] else buf
        p.add_(d, alpha=-group["lr"])
