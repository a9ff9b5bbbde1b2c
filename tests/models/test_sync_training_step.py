"""One DDP step of BN-Inception with synchronized BN on 2 ranks x B equals one step of
plain BN-Inception on 1 process x 2B: the point of synchronizing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from distributed_helpers import run_distributed
from torch.nn.parallel import DistributedDataParallel

from pipeline.models import create_model
from pipeline.models.syncbn import build_sync_group, convert_sync_batchnorm

PER_RANK, SIZE, CLASSES = 4, 96, 10
STEP_TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-3}


def _batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return (torch.randn(n, 3, SIZE, SIZE, generator=gen),
            torch.randint(0, CLASSES, (n,), generator=gen))


def _step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    F.cross_entropy(model(images), labels).backward()
    optimizer.step()


def _ddp_step(rank: int, world: int, sync: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("bn_inception", num_classes=CLASSES).to(dtype)
    model = convert_sync_batchnorm(model, build_sync_group(sync))
    images, labels = _batch(PER_RANK * world)
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    _step(DistributedDataParallel(model), images[rows].to(dtype), labels[rows])
    return model.state_dict()


def _single_process_step(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("bn_inception", num_classes=CLASSES).to(dtype)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = _batch(2 * PER_RANK)
    _step(model, images.to(dtype), labels)
    moved = max((v - initial[k]).abs().max() for k, v in model.state_dict().items()
                if v.is_floating_point())
    assert moved > 1e-2  # the step changed the weights, so equality below means something
    return model.state_dict()


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_synchronized_ddp_step_equals_one_process_on_the_whole_batch(dtype):
    """fp64 shows the equality (measured 2.5e-14). fp32 cannot reach 1e-5 on this network:
    at initialization its backward amplifies rounding ~1000x on the way down to conv1, so
    the single-process step itself moves conv1 by up to 4.6e-4 between 1 and 2 threads;
    fp32 is held to that noise floor, still far below the unsynchronized 0.2."""
    expected = _single_process_step(dtype)
    rank0, rank1 = run_distributed(_ddp_step, world_size=2, args=("global", dtype))
    assert _max_difference(rank0, rank1) == 0  # same weights and running stats
    assert _max_difference(rank0, expected) < STEP_TOLERANCE[dtype]


def test_per_gpu_bn_does_not_equal_the_whole_batch():
    """The control: without synchronization the same step lands measurably elsewhere."""
    expected = _single_process_step(torch.float64)
    rank0, _ = run_distributed(_ddp_step, world_size=2, args=("none", torch.float64))
    assert _max_difference(rank0, expected) > 0.05
