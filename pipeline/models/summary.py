"""Per-layer table of a model at an input size: output shape, parameters, multiply-adds.

Multiply-adds count convolutions and linear layers (the weights' work); BN, pooling and
nonlinearities are left out, as in the papers' figures (BN folds into the conv anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.models.bn_inception import InceptionBlock
from pipeline.models.layers import ConvBNAct


@dataclass(frozen=True)
class LayerRow:
    name: str
    shape: tuple[int, ...]
    params: int
    macs: int


def layer_macs(module: nn.Module, output: Tensor) -> int:
    """Multiply-adds of one conv or linear layer for the batch that produced `output`."""
    if isinstance(module, ConvBNAct):
        module = module.conv
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def _layers(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Leaf modules, except that a ConvBNAct is one layer (as in the paper's table)."""
    if isinstance(module, ConvBNAct) or not any(module.children()):
        return [(prefix, module)]
    found = []
    for name, child in module.named_children():
        found += _layers(child, f"{prefix}.{name}" if prefix else name)
    return found


def _concats(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Inception modules: their rows show the concatenated output (their layers are listed
    above them, so the row's own parameters and multiply-adds are zero)."""
    return [(f"{n} (concat)", m) for n, m in model.named_modules() if isinstance(m, InceptionBlock)]


def layer_table(model: nn.Module, size: int | tuple[int, int] = 224,
                in_channels: int = 3) -> list[LayerRow]:
    """Runs one image through `model` (eval, no grad) and records every layer."""
    height, width = (size, size) if isinstance(size, int) else size
    rows: list[LayerRow] = []

    def record(name: str, counted: bool):
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            params = sum(p.numel() for p in module.parameters()) if counted else 0
            macs = layer_macs(module, output) if counted else 0
            rows.append(LayerRow(name, tuple(output.shape[1:]), params, macs))
        return hook

    handles = [m.register_forward_hook(record(n, True)) for n, m in _layers(model)]
    handles += [m.register_forward_hook(record(n, False)) for n, m in _concats(model)]
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, in_channels, height, width, dtype=param.dtype,
                              device=param.device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return rows


def format_table(rows: list[LayerRow], total_params: int) -> str:
    """The table as text, with totals; total_params comes from the model so that weights
    a forward pass never touches would still show up as a mismatch."""
    width = max(len("layer"), *(len(row.name) for row in rows))
    header = f"{'layer':<{width}} {'output':>14} {'params':>12} {'mult-adds':>15}"
    lines = [header, "-" * len(header)]
    for row in rows:
        shape = "x".join(map(str, row.shape))
        lines.append(f"{row.name:<{width}} {shape:>14} {row.params:>12,} {row.macs:>15,}")
    macs = sum(row.macs for row in rows)
    lines.append("-" * len(header))
    lines.append(f"{'total':<{width}} {'':>14} {total_params:>12,} {macs:>15,}")
    lines.append(f"parameters {total_params / 1e6:.2f} M, multiply-adds {macs / 1e9:.2f} G")
    return "\n".join(lines)


def summarize(model: nn.Module, size: int | tuple[int, int] = 224, in_channels: int = 3) -> str:
    rows = layer_table(model, size, in_channels)
    return format_table(rows, sum(p.numel() for p in model.parameters()))
