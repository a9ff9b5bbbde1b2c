"""DDP and DeepSpeed: 2 ranks x B with synchronized BN step like 1 rank x 2B, and like each
other. Real gloo process groups; the parts come from the trainer's own assembly."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from distributed_helpers import run_distributed

from pipeline.config import load_config
from pipeline.dist.group import init_distributed
from pipeline.training.assembly import DataShape, assemble
from pipeline.training.optim import set_lr

PER_RANK, SIZE, CLASSES, STEPS, LR = 4, 64, 10, 4, 0.02


def _batches(n: int, size: int = SIZE) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(5)
    return [(torch.randn(n, 3, size, size, generator=gen),
             torch.randint(0, CLASSES, (n,), generator=gen)) for _ in range(STEPS)]


def _train(rank: int, world: int, engine_name: str, dtype: torch.dtype, accumulation: int,
           sync_bn: str = "global", extra: tuple[str, ...] = (), size: int = SIZE):
    """STEPS optimizer steps over the same global batches; returns weights, losses and the
    gradient norm each step measured."""
    per_rank = 2 * PER_RANK // world
    cfg = load_config(None, [
        "data.shards=/unused", f"data.batch_size={per_rank // accumulation}",
        "data.channels_last=false", f"dist.engine={engine_name}", "dist.device=cpu",
        "precision.autocast=float32", f"model.sync_bn={sync_bn}", "optim.weight_decay=1e-4",
        f"optim.accumulation={accumulation}", *extra])
    torch.set_default_dtype(dtype)  # the model is built in it (fp64: rounding out of the way)
    engine = assemble(cfg, init_distributed(cfg.dist), DataShape(1000, CLASSES)).engine
    losses, norms = [], []
    for images, labels in _batches(2 * PER_RANK, size):
        set_lr(engine.optimizer, LR)
        rows = range(rank * per_rank, (rank + 1) * per_rank)
        step_loss = torch.zeros((), dtype=torch.float64)
        for micro in range(accumulation):
            part = slice(rows[0] + micro * (per_rank // accumulation),
                         rows[0] + (micro + 1) * (per_rank // accumulation))
            loss, _ = engine.forward_backward(images[part].to(dtype), labels[part],
                                              boundary=micro == accumulation - 1)
            step_loss += loss.double() / accumulation
        norm = engine.step(measure_norm=True)
        norms.append(None if norm is None else norm.item())
        dist.all_reduce(step_loss)
        losses.append(step_loss.item() / world)
    weights = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    return weights, losses, norms


def _max_difference(a: dict, b: dict, only: set[str] | None = None) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a
               if only is None or k in only)


@pytest.fixture(scope="module")
def one_rank() -> tuple[dict, list[float], list[float]]:
    """The reference: 1 process, the whole batch of 2 x PER_RANK, plain BN (fp64)."""
    (result,) = run_distributed(_train, world_size=1, args=("ddp", torch.float64, 1))
    return result


def test_two_ranks_with_sync_bn_equal_one_rank_on_the_whole_batch(one_rank):
    """fp64 over 4 SGD steps: weights, BN running statistics and losses (the issue asks
    1e-5). DeepSpeed cannot reduce fp64 gradients; the next test ties it to DDP in fp32."""
    rank0, rank1 = run_distributed(_train, world_size=2, args=("ddp", torch.float64, 1))
    assert _max_difference(rank0[0], rank1[0]) == 0  # the ranks hold the same weights
    weights, losses, norms = one_rank
    moved = _max_difference(weights, run_distributed(_initial, world_size=1)[0])
    assert moved > 1e-2  # the steps changed the weights: equality below means something
    assert _max_difference(rank0[0], weights) < 1e-9
    assert rank0[1] == pytest.approx(losses, abs=1e-10)
    # The logged gradient norm is the global batch's, the same on every rank.
    assert rank0[2] == rank1[2] and rank0[2] == pytest.approx(norms, rel=1e-9)
    assert min(norms) > 0


@pytest.mark.parametrize("accumulation, sync_bn", [(1, "global"), (2, "none")])
def test_deepspeed_steps_exactly_like_ddp_in_fp32(accumulation, sync_bn):
    """The same loss curve and weights, to the bit (measured). In fp32 neither equals the
    1-rank run to 1e-5 on this tiny setting: a single process in fp32 and in fp64 already
    end 5e-3 apart after 4 steps (BN over 8 images of 2x2 pixels in inception 5b)."""
    args = (torch.float32, accumulation, sync_bn)
    ddp = run_distributed(_train, world_size=2, timeout_s=300, args=("ddp", *args))
    ds = run_distributed(_train, world_size=2, timeout_s=300, args=("deepspeed", *args))
    assert ds[0][1] == ddp[0][1] and ds[1][1] == ddp[1][1]
    assert ds[0][2] == pytest.approx(ddp[0][2], rel=1e-5) and min(ddp[0][2]) > 0
    assert _max_difference(ds[0][0], ddp[0][0]) == 0  # rank 0: weights and BN statistics
    # Per-GPU BN statistics stay per rank under DeepSpeed (DDP copies rank 0's into every
    # rank each forward); evaluation and checkpoints use rank 0's, so only weights agree.
    assert _max_difference(ds[0][0], ds[1][0], _parameters(ds[0][0])) == 0


@pytest.fixture(scope="module")
def ddp_fp32() -> dict:
    return run_distributed(_train, world_size=2, args=("ddp", torch.float32, 1))


def test_autocast_precisions_agree_between_engines():
    """bf16 and fp16 (with its gradient scaler) under both engines: weights and BN in fp32,
    the forward in half precision (the two precisions' losses part ways). 32 px: CPU
    autocast is slow, and the agreement does not depend on the size."""
    losses = {}
    for autocast in ("bfloat16", "float16"):
        for engine in ("ddp", "deepspeed"):
            args = (engine, torch.float32, 1, "global", ("precision.autocast=" + autocast,), 32)
            weights, losses[autocast, engine], _ = run_distributed(_train, world_size=2,
                                                                   args=args)[0]
            assert {v.dtype for v in weights.values() if v.is_floating_point()} == \
                {torch.float32}
        assert losses[autocast, "deepspeed"] == pytest.approx(losses[autocast, "ddp"],
                                                              rel=1e-4)
    assert losses["bfloat16", "ddp"] != pytest.approx(losses["float16", "ddp"], rel=1e-6)


CLIP = ("optim.grad_clip=0.5",)


@pytest.fixture(scope="module")
def ddp_clipped() -> dict:
    return run_distributed(_train, world_size=2, args=("ddp", torch.float32, 1, "global", CLIP))


def test_clipping_acts(ddp_clipped, ddp_fp32):
    params = _parameters(ddp_clipped[0][0])
    assert _max_difference(ddp_clipped[0][0], ddp_fp32[0][0], params) > 1e-2  # measured 0.12


@pytest.mark.parametrize("zero_stage", [0, 1, 2])
def test_zero_stages_and_clipping_step_like_ddp(ddp_clipped, zero_stage):
    """ZeRO shards optimizer state (1) and gradients (2) over the ranks; the step is the
    same SGD step, with gradient clipping on (max norm 0.5) in both engines. Measured
    3.3e-5 (stage 0) and 3.5e-5 (1, 2) apart after 4 steps, not 0: DeepSpeed computes the
    clipping norm in its own order."""
    ds = run_distributed(_train, world_size=2, timeout_s=300, args=(
        "deepspeed", torch.float32, 1, "global", (*CLIP, f"dist.zero_stage={zero_stage}")))
    assert ds[0][1] == pytest.approx(ddp_clipped[0][1], rel=1e-4)
    # The norm before clipping: equal at the first step, then as near as the weights
    # (measured 1.1e-3 relative at step 4).
    assert ds[0][2][0] == pytest.approx(ddp_clipped[0][2][0], rel=1e-6)
    assert ds[0][2] == pytest.approx(ddp_clipped[0][2], rel=1e-2)
    assert _max_difference(ds[0][0], ddp_clipped[0][0], _parameters(ds[0][0])) < 1e-4


def test_accumulation_skips_the_inner_all_reduce_and_averages_micro_batches():
    """Per-GPU BN over micro-batches of 2: 2 ranks x 2 micro-batches per step equal 1 rank
    x 4 micro-batches (the same 8 images, the same BN chunks) in the weights (fp64)."""
    (reference,) = run_distributed(_train, world_size=1, args=("ddp", torch.float64, 4, "none"))
    rank0, rank1 = run_distributed(_train, world_size=2, args=("ddp", torch.float64, 2, "none"))
    params = _parameters(reference[0])
    assert _max_difference(rank0[0], rank1[0], params) == 0
    # Measured 6.5e-6: BN over 2 images amplifies fp64 rounding; 4 ranks x 2 images with no
    # accumulation land as far (7.4e-6). A wrong loss scale moves the weights by ~1e-2.
    assert _max_difference(rank0[0], reference[0], params) < 1e-4
    assert rank0[1] == pytest.approx(reference[1], abs=1e-6)


def _parameters(state: dict) -> set[str]:
    return {k for k in state if "running" not in k and "num_batches" not in k}


def _initial(rank: int, world: int) -> dict:
    torch.set_default_dtype(torch.float64)
    cfg = load_config(None, ["data.shards=/unused", "dist.device=cpu"])
    model = assemble(cfg, init_distributed(cfg.dist), DataShape(1000, CLASSES)).model
    return {k: v.double() for k, v in model.state_dict().items()}
