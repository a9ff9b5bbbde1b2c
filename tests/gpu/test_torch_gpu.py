"""The GPU check, part 1 (bench/gpu_check.sh torch): synchronized BN on the device's
tensors, and a short bf16 channels_last training on the device that resumes bit for bit."""

from __future__ import annotations

import pytest
import torch
from distributed_helpers import run_distributed
from torch import nn

from pipeline.models.syncbn import CpuSyncBatchNorm

SIZES = (5, 3)  # rank 0 holds 5 images of each batch, rank 1 holds 3


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(3)
    offsets = torch.tensor([0.0, 50.0, -7.0]).view(1, 3, 1, 1)
    return [(torch.randn(8, 3, 6, 5, generator=gen) * 2 + offsets,
             torch.randn(8, 3, 6, 5, generator=gen)) for _ in range(2)]


def _bn(kind: str, device: torch.device) -> nn.Module:
    cls = {"whole": nn.BatchNorm2d, "ours": CpuSyncBatchNorm, "torch": nn.SyncBatchNorm}[kind]
    bn = cls(3).to(device)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, 0.5, 1.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    return bn


def _run(kind: str, device: torch.device, rows: slice) -> dict:
    bn = _bn(kind, device)
    out = []
    for x_full, dy_full in _batches():
        x = x_full[rows].to(device).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        y = bn(x)
        y.backward(dy_full[rows].to(device))
        out.append({"y": y.detach().cpu(), "dx": x.grad.cpu(), "dw": bn.weight.grad.cpu(),
                    "db": bn.bias.grad.cpu()})
        bn.zero_grad()
    return {"steps": out, "mean": bn.running_mean.cpu(), "var": bn.running_var.cpu()}


def _two_ranks(rank: int, world: int, device_name: str, kind: str) -> dict:
    """Two ranks on the one device, gloo between them (NCCL refuses two ranks per GPU)."""
    start = sum(SIZES[:rank])
    try:
        return _run(kind, torch.device(device_name), slice(start, start + SIZES[rank]))
    except (RuntimeError, ValueError) as err:  # torch's SyncBatchNorm off CUDA or on gloo
        return {"refused": f"{type(err).__name__}: {str(err).splitlines()[0]}"}


@pytest.mark.parametrize("kind", ["ours", "torch"])
def test_sync_bn_on_the_device_equals_bn_over_the_whole_batch(device, kind):
    whole = _run("whole", device, slice(0, sum(SIZES)))
    ranks = run_distributed(_two_ranks, world_size=2, args=(str(device), kind))
    if kind == "torch" and "refused" in ranks[0]:
        if device.type == "cpu":
            pytest.skip(f"torch's SyncBatchNorm takes CUDA tensors only ({ranks[0]['refused']})")
        pytest.fail(f"nn.SyncBatchNorm on {device} with gloo: {ranks[0]['refused']}")
    for step, expected in enumerate(whole["steps"]):
        for key in ("y", "dx"):
            got = torch.cat([r["steps"][step][key] for r in ranks])
            torch.testing.assert_close(got, expected[key], rtol=1e-4, atol=1e-4)
        for key in ("dw", "db"):  # each rank's share; DDP sums them
            torch.testing.assert_close(sum(r["steps"][step][key] for r in ranks),
                                       expected[key], rtol=1e-4, atol=1e-4)
    for r in ranks:
        torch.testing.assert_close(r["mean"], whole["mean"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(r["var"], whole["var"], rtol=1e-4, atol=1e-4)


def test_bf16_training_on_the_device_resumes_bit_for_bit(device, sample_shards, tmp_path):
    """8 steps straight, then the same run branched back to its step-4 checkpoint: the new
    step 8 equals the first one bit for bit (precision.deterministic)."""
    from run_helpers import launch, state_at

    args = [f"data.shards={sample_shards}", f"runs_dir={tmp_path}", "name=run",
            f"dist.device={device.type}", "data.backend=webdataset", "data.image_size=64",
            "data.batch_size=8", "schedule.epochs=0.16", "eval.every_epochs=0",
            "checkpoint.every_steps=4", "precision.autocast=bfloat16",
            "data.dtype=bfloat16", "precision.deterministic=true", "log.every_steps=4"]
    env = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    straight = launch(args, 1, tmp_path / "logs", env)
    assert straight.wait(timeout=600) == [0], straight.text()
    first = state_at(tmp_path / "run", 8)
    step4 = tmp_path / "run" / "checkpoints" / "step-00000004"
    again = launch([*args, f"checkpoint.resume={step4}"], 1, tmp_path / "logs", env)
    assert again.wait(timeout=600) == [0], again.text()
    assert "resumed from" in again.text()
    second = state_at(tmp_path / "run", 8)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
