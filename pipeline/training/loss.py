"""The training loss: cross-entropy in at least fp32, with label smoothing."""

from __future__ import annotations

import torch
from torch import nn


def criterion(label_smoothing: float):
    """Cross-entropy that upcasts bf16/fp16 logits to fp32 first."""

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return nn.functional.cross_entropy(logits, labels, label_smoothing=label_smoothing)

    return loss
