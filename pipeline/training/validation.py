"""Validation over the exact val set, and precise BN statistics.

    metrics = evaluate(engine.module, val_loader, run.autocast_dtype)   # every rank
    # {"val/loss", "val/top1", "val/top5", "val/images"}: over every val image once

Ranks sum loss and correct counts over their real samples (`valid` masks the padding of
the last batches), then one all-reduce gives the totals; the image count is checked
against the val set, so a wrong top-1 cannot pass silently. BN runs in eval mode on rank
0's running statistics (broadcast first: with per-GPU or per-node BN they differ), and
never communicates in the forward.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from pipeline.data import ValLoader
from pipeline.training.precision import autocast


@torch.no_grad()
def evaluate(model: nn.Module, loader: ValLoader, amp_dtype: torch.dtype | None) -> dict:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    for buffer in model.buffers():  # per-GPU/node BN statistics differ: all use rank 0's
        dist.broadcast(buffer, src=0)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1, top-5, images
    for images, labels, valid in loader:
        with autocast(device, amp_dtype):
            logits = model(images).float()
        loss = nn.functional.cross_entropy(logits, labels, reduction="none")
        top1, top5 = correct_at(logits, labels, (1, 5))
        weight = valid.to(torch.float64)
        sums += torch.stack([(loss * weight).sum(), (top1 * weight).sum(),
                             (top5 * weight).sum(), weight.sum()])
    dist.all_reduce(sums)
    loss, top1, top5, images = sums.tolist()
    model.train(was_training)
    if round(images) != loader.num_samples:
        raise RuntimeError(f"validation counted {images:.0f} images, the val set has "
                           f"{loader.num_samples}: the val padding mask is wrong")
    return {"val/loss": loss / images, "val/top1": top1 / images, "val/top5": top5 / images,
            "val/images": int(images)}


def correct_at(logits: torch.Tensor, labels: torch.Tensor,
               ks: tuple[int, ...]) -> list[torch.Tensor]:
    """Per sample, whether the label is among the top-k logits (as float64), for each k."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return [hits[:, :k].any(dim=1).to(torch.float64) for k in ks]


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, batches: Iterable, num_batches: int,
                            amp_dtype: torch.dtype | None) -> None:
    """Precise BN: running statistics become the plain average over `num_batches` train
    batches (momentum None), instead of the exponential average of the training run.
    Synchronized BN pools them over its group as in training; every rank must call it."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    for i, (images, _) in enumerate(batches):
        if i == num_batches:
            break
        with autocast(device, amp_dtype):
            model(images)
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum
    model.train(was_training)
