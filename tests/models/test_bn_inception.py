"""BN-Inception's shapes, widths, parameter count and variants match the paper's Figure 5."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models import MODELS, BNInception, create_model
from pipeline.models.bn_inception import INCEPTION_SPECS, GridReductionPool, InceptionSpec
from pipeline.models.layers import ConvBNAct
from pipeline.models.summary import layer_table

PARAMS_BN = 11_285_224  # bn-inception.md: measured on the Caffe-layout network
CONV_CHANNELS = 10_016  # output channels of all convs, summed over Figure 5's table
# (C, H, W) after each module at 224 px, from the branch widths (the "output" column of
# Figure 5 has typos at 3c, 4c, 4d and 4e: see bn-inception.md).
OUTPUTS_224 = {
    "conv1": (64, 112, 112), "pool1": (64, 56, 56), "conv2": (192, 56, 56),
    "pool2": (192, 28, 28),
    "inception_3a": (256, 28, 28), "inception_3b": (320, 28, 28),
    "inception_3c": (576, 14, 14), "inception_4a": (576, 14, 14),
    "inception_4b": (576, 14, 14), "inception_4c": (608, 14, 14),
    "inception_4d": (608, 14, 14), "inception_4e": (1056, 7, 7),
    "inception_5a": (1024, 7, 7), "inception_5b": (1024, 7, 7),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def model() -> BNInception:
    torch.manual_seed(0)
    return create_model("bn_inception").eval()


def test_module_outputs_at_224(model):
    shapes = {}
    hooks = [model.features.get_submodule(name).register_forward_hook(
        lambda m, i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
        for name in OUTPUTS_224]
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224))
    for hook in hooks:
        hook.remove()
    assert shapes == OUTPUTS_224
    assert logits.shape == (1, 1000)


@pytest.mark.parametrize("size", [224, 128, 96, (150, 100), 113])
def test_any_input_size_from_96_px(model, size):
    """Sizes that are not multiples of 32 give odd grids at 3c/4e (150 -> 9 at 4e)."""
    hw = (size, size) if isinstance(size, int) else size
    with torch.no_grad():
        assert model(torch.randn(2, 3, *hw)).shape == (2, 1000)


def test_branch_widths_follow_the_table():
    assert [s.name for s in INCEPTION_SPECS] == ["3a", "3b", "3c", "4a", "4b", "4c", "4d",
                                                 "4e", "5a", "5b"]
    widths, channels = [], 192
    for spec in INCEPTION_SPECS:
        channels = spec.out_channels(channels)
        widths.append(channels)
    assert widths == [256, 320, 576, 576, 576, 608, 608, 1056, 1024, 1024]
    with pytest.raises(ValueError, match="stride-2 module has no 1x1 branch"):
        InceptionSpec("x", 64, 64, 64, 64, 96, "max", 0, stride=2)


def test_stride_2_modules_pass_through_without_1x1(model):
    for name in ("inception_3c", "inception_4e"):
        block = model.features.get_submodule(name)
        assert block.branch1x1 is None and block.branch3x3.conv.stride == (2, 2)
        assert block.branch3x3dbl_2.conv.stride == (2, 2)
        assert not list(block.branch_pool.parameters())
    assert isinstance(model.features.inception_5b.branch_pool.pool, nn.MaxPool2d)
    assert isinstance(model.features.inception_5a.branch_pool.pool, nn.AvgPool2d)


def test_parameter_count_matches_the_measured_figure(model):
    assert n_params(model) == PARAMS_BN
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(c.out_channels for c in convs) == CONV_CHANNELS
    assert all(c.bias is None for c in convs)
    # 1024 * 1000 weights + 1000 biases in the classifier.
    assert n_params(model.fc) == 1_025_000


def test_no_bn_baseline_trades_gamma_and_beta_for_a_conv_bias():
    """Without BN each conv output channel loses gamma and beta (2) and gains a bias (1):
    11,285,224 - 10,016 = 11,275,208 (BN plus conv biases would be 11,295,240)."""
    baseline = create_model("bn_inception", bn=False)
    assert n_params(baseline) == PARAMS_BN - CONV_CHANNELS == 11_275_208
    assert not any(isinstance(m, nn.BatchNorm2d) for m in baseline.modules())
    assert all(m.bias is not None for m in baseline.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        assert torch.isfinite(baseline.eval()(torch.randn(2, 3, 96, 96))).all()


def test_sigmoid_variant_replaces_every_relu():
    model = create_model("bn_inception", act="sigmoid", num_classes=10)
    layers = [m for m in model.modules() if isinstance(m, ConvBNAct)]
    assert len(layers) == 69 and all(isinstance(m.act, nn.Sigmoid) for m in layers)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    out = model(torch.randn(2, 3, 96, 96))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_separable_stem_is_depthwise_3_to_24_then_1x1_to_64():
    model = create_model("bn_inception", separable_stem=True)
    depthwise = model.features.conv1.depthwise
    assert (depthwise.in_channels, depthwise.out_channels, depthwise.groups) == (3, 24, 3)
    assert depthwise.kernel_size == (7, 7) and depthwise.stride == (2, 2)
    # 7x7x3x64 = 9,408 weights become 7x7x24 + 24x64 = 2,712.
    assert n_params(model) == PARAMS_BN - 9_408 + 7 * 7 * 24 + 24 * 64
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 96, 96)).shape == (1, 1000)


def test_multiply_adds_at_224(model):
    rows = layer_table(model, 224)
    macs = sum(row.macs for row in rows)
    assert macs == 2_032_600_064 and round(macs / 1e9, 2) == 2.03
    # Every parameter shows up in exactly one row.
    assert sum(row.params for row in rows) == PARAMS_BN


def test_initialization():
    torch.manual_seed(0)
    model = create_model("bn_inception")
    conv = model.features.inception_5a.branch3x3.conv  # fan_in 192 * 9
    assert conv.weight.std().item() == pytest.approx((2 / (192 * 9)) ** 0.5, rel=0.02)
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert not model.fc.bias.any()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((b.weight == 1).all() and (b.bias == 0).all()) for b in bns)


def test_options_reach_the_layers():
    model = create_model("bn_inception", num_classes=7, dropout=0.3, bn_eps=1e-3,
                         bn_momentum=0.01)
    bn = model.features.inception_4a.branch1x1.bn
    assert (bn.eps, bn.momentum, model.dropout.p, model.fc.out_features) == (1e-3, 0.01, 0.3, 7)
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        create_model("resnet50")
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        create_model("bn_inception", act="tanh")
    assert "bn_inception" in MODELS


def test_channels_last_matches_contiguous(model):
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)
        cl_model = create_model("bn_inception").eval()
        cl_model.load_state_dict(model.state_dict())
        cl_model = cl_model.to(memory_format=torch.channels_last)
        got = cl_model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_bf16_autocast_stays_close_to_fp32(model):
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x)
    assert got.dtype == torch.bfloat16
    # bf16 keeps ~3 significant digits; the logits' spread sets the scale.
    assert (got.float() - expected).abs().max() < 0.05 * expected.abs().max()


def test_compiles_as_one_graph_in_training():
    torch.manual_seed(0)
    eager = create_model("bn_inception", num_classes=10)
    compiled_model = create_model("bn_inception", num_classes=10)
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model, backend="eager", fullgraph=True)
    x = torch.randn(2, 3, 96, 96)
    torch.testing.assert_close(compiled(x), eager(x))
    torch.testing.assert_close(compiled_model.features.conv1.bn.running_mean,
                               eager.features.conv1.bn.running_mean)


def test_grid_reduction_pool_is_caffes_pool_on_even_grids():
    pool, caffe = GridReductionPool(), nn.MaxPool2d(3, 2, ceil_mode=True)
    stride_2_conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    even = torch.randn(1, 1, 14, 28)
    torch.testing.assert_close(pool(even), caffe(even), atol=0, rtol=0)
    for h, w in ((9, 14), (7, 7)):
        odd = torch.randn(1, 1, h, w)
        assert pool(odd).shape == stride_2_conv(odd).shape
        assert caffe(odd).shape != stride_2_conv(odd).shape  # why the padding exists
