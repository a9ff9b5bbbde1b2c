"""Weight-decay groups by shape, and LARS's update against its formula."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.config import OptimConfig
from pipeline.models import create_model
from pipeline.training.optim import LARS, build_optimizer, param_groups


def test_bn_and_biases_are_not_decayed():
    model = create_model("bn_inception", num_classes=10)
    groups = param_groups(model, OptimConfig(weight_decay=1e-4))
    decayed, plain = groups
    bn_params = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d)
                 for p in m.parameters()}
    assert decayed["weight_decay"] == 1e-4 and plain["weight_decay"] == 0
    assert bn_params <= {id(p) for p in plain["params"]}
    assert id(model.fc.bias) in {id(p) for p in plain["params"]}
    assert all(p.ndim == 4 for p in decayed["params"][:-1]) and decayed["params"][-1] is \
        model.fc.weight
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters())
    everything = param_groups(model, OptimConfig(weight_decay=1e-4, decay_norm_and_bias=True))
    assert everything[1]["weight_decay"] == 1e-4


def test_sgd_is_torch_sgd_with_nesterov():
    optimizer = build_optimizer(nn.Linear(3, 2), OptimConfig(nesterov=True), lr=0.5)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["nesterov"] and optimizer.param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_step_follows_the_formula(nesterov):
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    optimizer = build_optimizer(layer, OptimConfig(name="lars", weight_decay=0.01,
                                                   lars_trust=0.02, momentum=0.9,
                                                   nesterov=nesterov), lr=0.5)
    assert isinstance(optimizer, LARS)
    velocity_w = velocity_b = None
    for _ in range(3):
        optimizer.zero_grad()
        layer(torch.randn(5, 4)).square().sum().backward()
        g, gb = layer.weight.grad.clone(), layer.bias.grad.clone()
        w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
        d = g + 0.01 * w
        d = d * (0.02 * w.norm() / d.norm())  # adapted: the weight matrix
        velocity_w = d if velocity_w is None else 0.9 * velocity_w + d
        velocity_b = gb if velocity_b is None else 0.9 * velocity_b + gb  # bias: plain SGD
        step_w = d + 0.9 * velocity_w if nesterov else velocity_w
        step_b = gb + 0.9 * velocity_b if nesterov else velocity_b
        optimizer.step()
        torch.testing.assert_close(layer.weight.detach(), w - 0.5 * step_w)
        torch.testing.assert_close(layer.bias.detach(), b - 0.5 * step_b)
    assert not torch.equal(layer.weight.detach(), w0) and not torch.equal(layer.bias, b0)
