"""Fold inference-mode BatchNorm into the convolution before it.

At inference BN is the fixed affine map gamma * (x - mean) / sqrt(var + eps) + beta, so
it merges into the preceding conv's weights and a bias: one op fewer per layer.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pipeline.models.layers import ConvBNAct


def fold_bn(model: nn.Module) -> nn.Module:
    """A new eval-mode copy of `model` whose ConvBNAct layers have BN folded into the conv
    (which gains a bias); `model` itself is left untouched. Works on synchronized BN too."""
    # Process groups cannot be copied; the copy may share them (its BN layers go anyway).
    groups = [getattr(m, "process_group", None) for m in model.modules()]
    folded = copy.deepcopy(model, memo={id(g): g for g in groups if g is not None}).eval()
    for layer in folded.modules():
        if isinstance(layer, ConvBNAct) and isinstance(layer.bn, _BatchNorm):
            layer.conv = fuse_conv_bn_eval(layer.conv, layer.bn)
            layer.bn = nn.Identity()
    return folded
