"""Synchronized BatchNorm: statistics over the batch of a group of ranks, not one GPU's.

    group = build_sync_group("node", ranks_per_node=8)   # every rank, same order
    model = convert_sync_batchnorm(model.to(device), group)   # before DDP/DeepSpeed wraps it

CUDA models get torch.nn.SyncBatchNorm (fused kernels, NCCL). CPU models get
CpuSyncBatchNorm below, because torch.nn.SyncBatchNorm refuses CPU tensors and DDP refuses
CPU modules that contain it; this keeps gloo jobs and the tests on the same semantics.
Eval mode uses running statistics and never communicates.
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx
from torch.nn.modules.batchnorm import _BatchNorm

SyncSpec = str | int | None  # "global", "node", "none"/None, or a group size


def sync_group_size(sync: SyncSpec, world_size: int, ranks_per_node: int | None = None) -> int:
    """Ranks per BN group for a config value; 1 means plain per-GPU BN."""
    if sync is None or sync == "none":
        return 1
    if sync == "global":
        return world_size
    if sync == "node":
        if ranks_per_node is None:
            raise ValueError("sync BN group 'node' needs the number of ranks per node")
        size = ranks_per_node
    elif isinstance(sync, int) and not isinstance(sync, bool) and sync >= 1:
        size = sync
    else:
        raise ValueError(f"sync BN group {sync!r}: expected 'global', 'node', 'none' or a "
                         "positive group size")
    if size > world_size or world_size % size:
        raise ValueError(f"sync BN group size {size} (from {sync!r}) must divide the world "
                         f"size {world_size}")
    return size


def build_sync_group(sync: SyncSpec, ranks_per_node: int | None = None,
                     timeout: timedelta | None = None) -> dist.ProcessGroup | None:
    """This rank's BN process group, or None for per-GPU BN (and single-process runs).

    Collective: every rank must call it, with the same arguments. Groups are consecutive
    ranks (0..k-1, k..2k-1, ...): one node per group where ranks are numbered node by
    node, as torchrun and SLURM's default block distribution do.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return None
    size = sync_group_size(sync, dist.get_world_size(), ranks_per_node)
    if size == 1:
        return None
    if size == dist.get_world_size():
        return dist.group.WORLD
    # new_subgroups makes every group on every rank in the same order, as new_group needs.
    group, _ = dist.new_subgroups(group_size=size, timeout=timeout)
    return group


def convert_sync_batchnorm(model: nn.Module, group: dist.ProcessGroup | None) -> nn.Module:
    """Replaces every BatchNorm layer with a synchronized one over `group` (no-op for None).

    Call after moving the model to its device: the device picks the implementation. The
    new layers share the old ones' parameters and buffers, so state dicts are unchanged.
    """
    if group is None:
        return model
    if isinstance(model, _BatchNorm) and not isinstance(model, nn.SyncBatchNorm | CpuSyncBatchNorm):
        return _synchronized(model, group)
    for name, child in model.named_children():
        model.add_module(name, convert_sync_batchnorm(child, group))
    return model


def sync_batchnorm_class(device: torch.device) -> type[_BatchNorm]:
    return CpuSyncBatchNorm if device.type == "cpu" else nn.SyncBatchNorm


def _synchronized(bn: _BatchNorm, group: dist.ProcessGroup) -> _BatchNorm:
    tensors = [*bn.parameters(recurse=False), *bn.buffers(recurse=False)]
    device = tensors[0].device if tensors else torch.device("cpu")
    sync = sync_batchnorm_class(device)(
        bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
        process_group=group, device="meta")
    # Share, not copy: an optimizer built on the old parameters keeps working.
    for name, tensor in [*bn.named_parameters(recurse=False), *bn.named_buffers(recurse=False)]:
        setattr(sync, name, tensor)
    sync.train(bn.training)
    return sync


class CpuSyncBatchNorm(_BatchNorm):
    """BatchNorm over the concatenated batch of `process_group`, for CPU tensors (gloo).

    Ranks may hold different batch sizes, including none: statistics are weighted by
    counts, so outputs, gradients and running statistics equal BatchNorm over the
    concatenated batch. Every rank of the group must run forward and backward.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group: dist.ProcessGroup | None = None, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {input.dim()}D")

    def _group_size(self) -> int:
        if not (dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size(self.process_group)

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or self._group_size() == 1:
            return super().forward(input)  # eval: running statistics, no collective
        self._check_input_dim(input)
        factor = self._average_factor()
        mean, var, count = _group_moments(input, self.process_group)
        if count <= 1:
            raise ValueError(f"sync BN needs more than 1 value per channel in training, got "
                             f"{count} over the group (input {list(input.shape)} here)")
        if self.track_running_stats:
            self._update_running_stats(mean, var * count / (count - 1), factor)
        invstd = torch.rsqrt(var + self.eps)
        return _SyncNormalize.apply(input, self.weight, self.bias, mean, invstd, count,
                                    self.process_group)

    def _average_factor(self) -> float:
        """As BatchNorm: momentum, or 1/n (a cumulative average) when momentum is None."""
        if not self.track_running_stats:
            return 0.0
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor, factor: float) -> None:
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased_var.to(self.running_var.dtype),
                                               alpha=factor)


def _reduce_dims(x: Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _per_channel(v: Tensor, x: Tensor) -> Tensor:
    """A [C] vector shaped to broadcast over x (N, C, ...) in x's compute dtype."""
    return v.to(_compute_dtype(x)).view(1, -1, *([1] * (x.dim() - 2)))


def _compute_dtype(x: Tensor) -> torch.dtype:
    # Half inputs normalize in fp32, as the CUDA kernels do.
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@torch.no_grad()
def _group_moments(x: Tensor, group: dist.ProcessGroup | None) -> tuple[Tensor, Tensor, int]:
    """Mean and biased variance per channel over the group's batch, in float64, and count.

    Each rank sends (count, mean, sum of squared deviations) from a two-pass local
    var_mean; they merge exactly with Chan et al.'s formula. A single all-reduce of sums of
    squares would cancel catastrophically when |mean| >> std.
    """
    channels, count = x.shape[1], x.numel() // max(x.shape[1], 1)
    if count > 0:
        var, mean = torch.var_mean(x.double(), dim=_reduce_dims(x), correction=0)
    else:
        var = mean = torch.zeros(channels, dtype=torch.float64, device=x.device)
    local = torch.cat([mean, var * count, mean.new_tensor([count])])
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, local, group=group)
    table = torch.stack(gathered)
    means, m2, counts = table[:, :channels], table[:, channels:-1], table[:, -1:]
    total = int(counts.sum().item())
    if total == 0:
        return mean, var, 0
    group_mean = (counts * means).sum(0) / total
    group_m2 = m2.sum(0) + (counts * (means - group_mean) ** 2).sum(0)
    return group_mean, group_m2 / total, total


class _SyncNormalize(torch.autograd.Function):
    """y = (x - mean) * invstd * weight + bias with the group's statistics.

    The statistics depend on every rank's input, so backward all-reduces the per-channel
    sums of dy and dy * x_hat; weight and bias gradients stay local (DDP averages them).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, weight: Tensor | None, bias: Tensor | None,
                mean: Tensor, invstd: Tensor, count: int,
                group: dist.ProcessGroup | None) -> Tensor:
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.count, ctx.group = count, group
        scale = invstd if weight is None else invstd * weight.double()
        # Centre first: x * scale + (bias - mean * scale) cancels when |mean| >> std.
        y = (x.to(_compute_dtype(x)) - _per_channel(mean, x)) * _per_channel(scale, x)
        if bias is not None:
            y = y + _per_channel(bias, x)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx: FunctionCtx, grad_out: Tensor):
        x, weight, mean, invstd = ctx.saved_tensors
        dims = _reduce_dims(x)
        dy = grad_out.to(_compute_dtype(x))
        x_hat = (x.to(dy.dtype) - _per_channel(mean, x)) * _per_channel(invstd, x)
        sum_dy = dy.sum(dims, dtype=torch.float64)
        sum_dy_xhat = (dy * x_hat).sum(dims, dtype=torch.float64)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            sums = torch.cat([sum_dy, sum_dy_xhat])
            dist.all_reduce(sums, group=ctx.group)
            mean_dy, mean_dy_xhat = (sums / ctx.count).chunk(2)
            scale = invstd if weight is None else invstd * weight.double()
            grad_x = (dy - _per_channel(mean_dy, x) - x_hat * _per_channel(mean_dy_xhat, x))
            grad_x = (grad_x * _per_channel(scale, x)).to(x.dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            grad_w = sum_dy_xhat.to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_b = sum_dy.to(weight.dtype)  # affine: bias implies weight
        return grad_x, grad_w, grad_b, None, None, None, None
