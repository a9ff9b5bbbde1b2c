"""Synchronized BN on real gloo groups equals BatchNorm2d over the concatenated batch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from distributed_helpers import run_distributed
from torch import Tensor, nn

from pipeline.models.syncbn import (
    CpuSyncBatchNorm,
    build_sync_group,
    convert_sync_batchnorm,
    sync_batchnorm_class,
    sync_group_size,
)

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 2e-2}


@dataclass(frozen=True)
class Case:
    """Rank r holds sizes[r] samples of each step's batch; groups are consecutive ranks."""

    name: str
    sizes: tuple[int, ...]
    sync: str | int
    dtype: torch.dtype = torch.float64
    momentum: float | None = 0.1
    affine: bool = True
    channels_last: bool = False
    offsets: tuple[float, ...] = (0.0, 5.0, -3.0)
    steps: int = 2

    def rows(self, rank: int) -> slice:
        start = sum(self.sizes[:rank])
        return slice(start, start + self.sizes[rank])

    def groups(self) -> list[list[int]]:
        world = len(self.sizes)
        size = sync_group_size(self.sync, world, ranks_per_node=2)
        return [list(range(start, start + size)) for start in range(0, world, size)]

    def batches(self) -> list[tuple[Tensor, Tensor]]:
        """(input, upstream gradient) per step; channels sit at very different means."""
        gen = torch.Generator().manual_seed(1)
        n, c = sum(self.sizes), len(self.offsets)
        offsets = torch.tensor(self.offsets, dtype=torch.float64).view(1, c, 1, 1)
        return [((torch.randn(n, c, 5, 4, generator=gen, dtype=torch.float64) * 2 + offsets)
                 .to(self.dtype), torch.randn(n, c, 5, 4, generator=gen).to(self.dtype))
                for _ in range(self.steps)]

    def fresh_bn(self) -> nn.BatchNorm2d:
        """A BatchNorm2d with non-trivial parameters and running statistics."""
        gen = torch.Generator().manual_seed(2)
        c = len(self.offsets)
        bn = nn.BatchNorm2d(c, momentum=self.momentum, affine=self.affine, dtype=self.dtype)
        with torch.no_grad():
            if self.affine:
                bn.weight.copy_(1 + 0.5 * torch.randn(c, generator=gen))
                bn.bias.copy_(torch.randn(c, generator=gen))
            bn.running_mean.copy_(torch.randn(c, generator=gen))
            bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
        return bn


CASES = (
    # |mean| = 1e4 >> std: a plain sum-of-squares variance would miss 1e-10 here.
    Case("global fp64 unequal, one empty rank", (3, 0, 5, 2), "global",
         offsets=(1e4, -20.0, 0.5)),
    Case("global fp32 cumulative channels_last", (2, 2, 2, 2), "global", torch.float32,
         momentum=None, channels_last=True),
    Case("groups of 2 fp64", (2, 3, 4, 1), 2),
    Case("node fp32 no affine, empty ranks", (1, 0, 0, 6), "node", torch.float32,
         affine=False),
    Case("global bf16", (2, 3, 1, 2), "global", torch.bfloat16),  # as under autocast
)


def _run_cases(rank: int, world: int, cases: tuple[Case, ...]) -> dict[str, dict]:
    results = {}
    for case in cases:
        bn = convert_sync_batchnorm(case.fresh_bn(), build_sync_group(case.sync, 2))
        assert isinstance(bn, CpuSyncBatchNorm)
        steps = []
        for x_full, dy_full in case.batches():
            x = x_full[case.rows(rank)].clone()
            if case.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x.requires_grad_()
            y = bn(x)
            y.backward(dy_full[case.rows(rank)])
            steps.append({"y": y.detach(), "dx": x.grad,
                          "dw": None if bn.weight is None else bn.weight.grad.clone(),
                          "db": None if bn.bias is None else bn.bias.grad.clone()})
            bn.zero_grad()
        results[case.name] = {"steps": steps, "state": bn.state_dict()}
    results["too few values"] = _too_few_values(rank)
    return results


def _too_few_values(rank: int) -> str:
    """One value per channel over the whole group: every rank must raise, none may hang."""
    bn = convert_sync_batchnorm(nn.BatchNorm2d(3), build_sync_group("global"))
    try:
        bn(torch.randn(1 if rank == 0 else 0, 3, 1, 1))
    except ValueError as error:
        return str(error)
    return "no error"


def _reference(case: Case, ranks: list[int]) -> dict:
    """BatchNorm2d in one process over the group's concatenated batch, split back."""
    bn = case.fresh_bn()
    rows = slice(case.rows(ranks[0]).start, case.rows(ranks[-1]).stop)
    steps = []
    for x_full, dy_full in case.batches():
        x = x_full[rows].clone().requires_grad_()
        y = bn(x)
        y.backward(dy_full[rows])
        steps.append({"y": y.detach(), "dx": x.grad,
                      "dw": None if bn.weight is None else bn.weight.grad.clone(),
                      "db": None if bn.bias is None else bn.bias.grad.clone()})
        bn.zero_grad()
    return {"steps": steps, "state": bn.state_dict(), "start": rows.start}


@pytest.fixture(scope="module")
def four_rank_results() -> list[dict[str, dict]]:
    return run_distributed(_run_cases, world_size=4, args=(CASES,))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_sync_bn_equals_batchnorm_over_the_group_batch(case: Case, four_rank_results):
    tol = dict(atol=TOLERANCE[case.dtype], rtol=TOLERANCE[case.dtype])
    for ranks in case.groups():
        ref = _reference(case, ranks)
        for step, want in enumerate(ref["steps"]):
            for rank in ranks:
                got = four_rank_results[rank][case.name]["steps"][step]
                rows = slice(case.rows(rank).start - ref["start"],
                             case.rows(rank).stop - ref["start"])
                assert got["y"].shape == (case.sizes[rank], len(case.offsets), 5, 4)
                torch.testing.assert_close(got["y"], want["y"][rows], **tol)
                torch.testing.assert_close(got["dx"], want["dx"][rows], **tol)
            # Each rank holds its share of the parameter gradient; DDP sums (averages) them.
            for key in ("dw", "db") if case.affine else ():
                shares = [four_rank_results[r][case.name]["steps"][step][key] for r in ranks]
                torch.testing.assert_close(sum(shares), want[key], **tol)
        for rank in ranks:
            state = four_rank_results[rank][case.name]["state"]
            assert state.keys() == ref["state"].keys()
            for key, value in ref["state"].items():
                torch.testing.assert_close(state[key], value, **tol)


def test_too_few_values_over_the_group_raises_on_every_rank(four_rank_results):
    for result in four_rank_results:
        assert result["too few values"].startswith("sync BN needs more than 1 value per "
                                                   "channel in training, got 1 over the group")


def test_unsynchronized_bn_would_fail_these_checks():
    """The comparison is sensitive: per-rank BN on a slice is measurably different."""
    case = CASES[0]
    ref = _reference(case, [0, 1, 2, 3])
    bn = case.fresh_bn()
    x_full, _ = case.batches()[0]
    alone = bn(x_full[case.rows(2)])
    assert (alone - ref["steps"][0]["y"][case.rows(2)]).abs().max() > 1e-2


def _eval_without_collective(rank: int, world: int) -> Tensor | None:
    # The BN's group has a short timeout and rank 1 never uses it after training: a
    # collective in rank 0's eval forward would fail after 5 s instead of passing.
    group = dist.new_group([0, 1], timeout=timedelta(seconds=5))
    case = Case("eval", (3, 3), "global")
    bn = convert_sync_batchnorm(case.fresh_bn(), group)
    x_full, _ = case.batches()[0]
    bn(x_full[case.rows(rank)])  # one synchronized training step
    bn.eval()
    y = bn(x_full[:2]) if rank == 0 else None
    dist.barrier()  # on the default group, never the BN's
    return y


def test_eval_uses_running_stats_and_no_collective():
    results = run_distributed(_eval_without_collective, world_size=2)
    case = Case("eval", (3, 3), "global")
    bn = case.fresh_bn()
    x_full, _ = case.batches()[0]
    bn(x_full)
    bn.eval()
    torch.testing.assert_close(results[0], bn(x_full[:2]), atol=1e-10, rtol=1e-10)


def test_sync_group_sizes():
    assert sync_group_size("global", 16, ranks_per_node=8) == 16
    assert sync_group_size("node", 16, ranks_per_node=8) == 8
    assert sync_group_size(4, 16, ranks_per_node=8) == 4
    assert sync_group_size("none", 16, ranks_per_node=8) == 1
    assert sync_group_size(None, 16, ranks_per_node=8) == 1
    with pytest.raises(ValueError, match="must divide the world size 16"):
        sync_group_size(3, 16, ranks_per_node=8)
    with pytest.raises(ValueError, match="must divide the world size 4"):
        sync_group_size("node", 4, ranks_per_node=8)
    with pytest.raises(ValueError, match="expected 'global', 'node', 'none'"):
        sync_group_size("nodes", 16, ranks_per_node=8)
    with pytest.raises(ValueError, match="'node' needs the number of ranks per node"):
        sync_group_size("node", 16)


def test_single_process_needs_no_group_and_conversion_is_a_no_op():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert build_sync_group("global") is None  # no process group initialized
    assert convert_sync_batchnorm(model, None) is model
    assert type(model[1]) is nn.BatchNorm2d


def test_conversion_picks_torch_sync_bn_off_cpu_and_shares_state():
    assert sync_batchnorm_class(torch.device("cpu")) is CpuSyncBatchNorm
    assert sync_batchnorm_class(torch.device("cuda", 0)) is nn.SyncBatchNorm
    group = object()  # stands in for a ProcessGroup: conversion only stores it
    for device, expected in (("cpu", CpuSyncBatchNorm), ("meta", nn.SyncBatchNorm)):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=None)).to(device)
        old_bn, old_keys = model[1], model.state_dict().keys()
        converted = convert_sync_batchnorm(model, group)
        new_bn = converted[1]
        assert type(new_bn) is expected and new_bn.process_group is group
        assert new_bn.weight is old_bn.weight and new_bn.running_var is old_bn.running_var
        assert new_bn.momentum is None and converted.state_dict().keys() == old_keys
