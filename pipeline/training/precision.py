"""The forward pass under autocast: one context for the engines and evaluation.

    with autocast(device, run.autocast_dtype):    # None: plain fp32, a no-op
        logits = model(images)
"""

from __future__ import annotations

import torch


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
