"""One batch as the backends hand it over, and the checks every batch passes.

Labels travel as the shards store them (`KEY.cls`, ASCII digits) and are parsed and
range-checked here, on the CPU, so a bad label stops the run with the shard and sample
that hold it whichever backend read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

import torch

from data_prep.manifest import ShardError

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class RawBatch:
    """A backend's batch: images final (dtype, layout, device), labels int64 on the CPU."""

    images: torch.Tensor
    labels: torch.Tensor
    sources: Callable[[], list[tuple[str, str]]]  # (shard, key) per sample, made on demand
    valid: torch.Tensor | None = None  # val: True for real samples, False for padding


def parse_labels(cls: torch.Tensor, sources: Callable[[], list[tuple[str, str]]]) -> torch.Tensor:
    """Labels from the zero-padded ASCII bytes of each sample's .cls (a (B, L) uint8 tensor)."""
    if cls.shape[1] == 0:  # every .cls in the batch is empty
        cls = torch.zeros(cls.shape[0], 1, dtype=torch.uint8)
    present = cls != 0
    digits = cls.long() - ord("0")
    is_digit = (digits >= 0) & (digits <= 9)
    lengths = present.sum(dim=1)
    padded_at_end = (present[:, 1:] <= present[:, :-1]).all(dim=1)  # no zero byte inside
    good = present[:, 0] & padded_at_end & (is_digit | ~present).all(dim=1)
    if not bool(good.all()):
        i = int((~good).nonzero()[0])
        shard, key = sources()[i]
        text = bytes(cls[i][present[i]].tolist()).decode(errors="replace")
        raise ShardError(f"shard {shard}, sample {key}: {key}.cls is {text!r}, not an integer")
    place = lengths.unsqueeze(1) - 1 - torch.arange(cls.shape[1])
    weights = torch.where(present, torch.pow(10, place.clamp(min=0)), 0)
    return (digits.clamp(min=0) * weights).sum(dim=1)


def check_labels(labels: torch.Tensor, num_classes: int,
                 sources: Callable[[], list[tuple[str, str]]]) -> None:
    """Every label must index a class of classes.json."""
    bad = (labels < 0) | (labels >= num_classes)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        shard, key = sources()[i]
        raise ShardError(f"shard {shard}, sample {key}: label {int(labels[i])} is outside "
                         f"the {num_classes} classes of classes.json")


def dali_sources(source_info: torch.Tensor) -> list[tuple[str, str]]:
    """(shard, key) from DALI's zero-padded source_info, 'PATH.tar:OFFSET:KEY.jpg'."""
    out = []
    for row in source_info.tolist():
        text = bytes(row).rstrip(b"\0").decode()
        path, _, member = text.rsplit(":", 2)
        out.append((PurePath(path).name, member.rsplit(".", 1)[0]))
    return out


def to_model_layout(images: torch.Tensor, nhwc: bool, dtype: str) -> torch.Tensor:
    """NCHW-shaped images; NHWC input becomes a channels_last view (no copy), then the dtype.

    bfloat16 arrives as float32 (DALI has no bfloat16 output) and is rounded here once,
    on the device, which equals rounding the normalized value directly.
    """
    if nhwc:
        images = images.permute(0, 3, 1, 2)
    return images.to(TORCH_DTYPES[dtype])
