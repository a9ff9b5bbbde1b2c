"""Numerics: the forward pass under autocast, and deterministic kernels when asked.

    prepare_determinism(cfg.precision.deterministic)   # before CUDA starts
    with autocast(device, run.autocast_dtype):         # None: plain fp32, a no-op
        logits = model(images)
"""

from __future__ import annotations

import os

import torch

# cuBLAS picks reproducible reductions only with a fixed workspace, read when CUDA starts.
CUBLAS_WORKSPACE = ":4096:8"


def prepare_determinism(deterministic: bool) -> None:
    """What must be set before the first CUDA call (the device choice makes it)."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
