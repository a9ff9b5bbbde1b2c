"""fold_bn gives the same eval logits as the unfolded network, with no BN left."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from pipeline.models import create_model
from pipeline.models.fold import fold_bn
from pipeline.models.syncbn import CpuSyncBatchNorm, convert_sync_batchnorm


def _randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Trained-looking BN: statistics and affine parameters far from the identity."""
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            c = bn.num_features
            bn.running_mean.copy_(torch.randn(c, generator=gen))
            bn.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.2)
            bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(c, generator=gen) * 0.1)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)],
                         ids=["fp64", "fp32"])
def test_fold_bn_matches_eval_logits(dtype, tol):
    torch.manual_seed(0)
    model = create_model("bn_inception", num_classes=10, separable_stem=True).to(dtype)
    _randomize_bn(model, torch.Generator().manual_seed(1))
    model.train()
    folded = fold_bn(model)
    x = torch.randn(2, 3, 96, 96, dtype=dtype)
    with torch.no_grad():
        expected = model.eval()(x)
        got = folded(x)
    assert not folded.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(m.bias is not None for m in folded.modules()
               if isinstance(m, nn.Conv2d) and m.groups == 1)
    # The original is untouched: still BN, still its own weights.
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.features.conv2.conv.bias is None
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)
    assert expected.std() > 10 * tol  # logits are not trivially equal (all ~0)


class _Uncopyable:
    """Stands in for a ProcessGroup, which cannot be deep-copied or pickled."""

    def __reduce__(self):
        raise TypeError("cannot pickle a process group")


def test_fold_bn_accepts_synchronized_bn():
    torch.manual_seed(0)
    model = create_model("bn_inception", num_classes=10)
    _randomize_bn(model, torch.Generator().manual_seed(1))
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        expected = model.eval()(x)
    synced = convert_sync_batchnorm(model, _Uncopyable())
    assert isinstance(synced.features.conv1.bn, CpuSyncBatchNorm)
    folded = fold_bn(synced)
    assert not any(isinstance(m, _BatchNorm) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), expected, atol=1e-4, rtol=1e-4)
