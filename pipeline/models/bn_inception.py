"""BN-Inception (Ioffe & Szegedy 2015, Figure 5) with the branch widths the paper tabulates.

Layout and the choices the paper leaves open are in docs/model.md; the short version:
every conv is ConvBNAct, max pools are 3x3/2 in ceil mode without padding (Caffe), inner
average pools count padding, and the stride-2 modules 3c and 4e pass their input through
a max pool instead of a 1x1 branch.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.layers import ConvBNAct, SeparableConvBNAct

ConvBlock = Callable[..., nn.Module]


@dataclass(frozen=True)
class InceptionSpec:
    """One row of Figure 5. pool_proj == 0 means the pool output passes through."""

    name: str
    ch1x1: int
    ch3x3_reduce: int
    ch3x3: int
    ch3x3dbl_reduce: int
    ch3x3dbl: int
    pool: str
    pool_proj: int
    stride: int = 1

    def __post_init__(self) -> None:
        if self.pool not in ("avg", "max"):
            raise ValueError(f"inception {self.name}: pool must be 'avg' or 'max', "
                             f"got {self.pool!r}")
        if self.stride == 2 and (self.ch1x1 or self.pool_proj or self.pool != "max"):
            raise ValueError(f"inception {self.name}: a stride-2 module has no 1x1 branch and "
                             "passes its input through a max pool without projection")

    def out_channels(self, in_channels: int) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch3x3dbl + (self.pool_proj or in_channels)


INCEPTION_SPECS: tuple[InceptionSpec, ...] = (
    InceptionSpec("3a", 64, 64, 64, 64, 96, "avg", 32),
    InceptionSpec("3b", 64, 64, 96, 64, 96, "avg", 64),
    InceptionSpec("3c", 0, 128, 160, 64, 96, "max", 0, stride=2),
    InceptionSpec("4a", 224, 64, 96, 96, 128, "avg", 128),
    InceptionSpec("4b", 192, 96, 128, 96, 128, "avg", 128),
    InceptionSpec("4c", 160, 128, 160, 128, 160, "avg", 128),
    InceptionSpec("4d", 96, 128, 192, 160, 192, "avg", 128),
    InceptionSpec("4e", 0, 128, 192, 192, 256, "max", 0, stride=2),
    InceptionSpec("5a", 352, 192, 320, 160, 224, "avg", 128),
    InceptionSpec("5b", 352, 192, 320, 192, 224, "max", 128),
)


class GridReductionPool(nn.Module):
    """The pass-through 3x3/2 max pool of 3c and 4e: ceil mode, unpadded, as in Caffe.

    On an odd grid (inputs that are not a multiple of 32 px) that pool yields one row fewer
    than the stride-2 convs it is concatenated with, so odd dimensions get one pixel of
    padding; the even grids of the standard sizes keep Caffe's windows exactly.
    """

    def forward(self, x: Tensor) -> Tensor:
        padding = (x.shape[-2] % 2, x.shape[-1] % 2)
        return F.max_pool2d(x, 3, 2, padding=padding, ceil_mode=True)


class InceptionBlock(nn.Module):
    """Four branches concatenated as [1x1, 3x3, double 3x3, pool]."""

    def __init__(self, in_channels: int, spec: InceptionSpec, conv_block: ConvBlock = ConvBNAct):
        super().__init__()
        stride = spec.stride
        self.branch1x1 = conv_block(in_channels, spec.ch1x1, 1) if spec.ch1x1 else None
        self.branch3x3_reduce = conv_block(in_channels, spec.ch3x3_reduce, 1)
        self.branch3x3 = conv_block(spec.ch3x3_reduce, spec.ch3x3, 3, stride=stride)
        self.branch3x3dbl_reduce = conv_block(in_channels, spec.ch3x3dbl_reduce, 1)
        self.branch3x3dbl_1 = conv_block(spec.ch3x3dbl_reduce, spec.ch3x3dbl, 3)
        self.branch3x3dbl_2 = conv_block(spec.ch3x3dbl, spec.ch3x3dbl, 3, stride=stride)
        self.branch_pool = _pool_branch(in_channels, spec, conv_block)

    def forward(self, x: Tensor) -> Tensor:
        branches = [] if self.branch1x1 is None else [self.branch1x1(x)]
        branches.append(self.branch3x3(self.branch3x3_reduce(x)))
        branches.append(self.branch3x3dbl_2(self.branch3x3dbl_1(self.branch3x3dbl_reduce(x))))
        branches.append(self.branch_pool(x))
        return torch.cat(branches, dim=1)


def _pool_branch(in_channels: int, spec: InceptionSpec, conv_block: ConvBlock) -> nn.Module:
    if spec.stride == 2:
        return GridReductionPool()
    pool = (nn.AvgPool2d(3, 1, 1, count_include_pad=True) if spec.pool == "avg"
            else nn.MaxPool2d(3, 1, 1))
    return nn.Sequential(OrderedDict(pool=pool, proj=conv_block(in_channels, spec.pool_proj, 1)))


class BNInception(nn.Module):
    """BN-Inception; bn=False gives the paper's "Inception" baseline (convs with bias).

    Any input from 96 px up works: the head pools globally, and odd grids are handled in
    the stride-2 modules.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        bn: bool = True,
        act: str = "relu",
        dropout: float = 0.0,
        bn_eps: float = 1e-5,
        bn_momentum: float | None = 0.1,
        separable_stem: bool = False,
        in_channels: int = 3,
        specs: tuple[InceptionSpec, ...] = INCEPTION_SPECS,
    ) -> None:
        super().__init__()
        conv = functools.partial(ConvBNAct, bn=bn, act=act, bn_eps=bn_eps, bn_momentum=bn_momentum)
        layers = _stem(in_channels, conv, separable_stem)
        channels = 192
        for spec in specs:
            layers[f"inception_{spec.name}"] = InceptionBlock(channels, spec, conv)
            channels = spec.out_channels(channels)
        self.features = nn.Sequential(layers)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels
        _init_weights(self, act)

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.flatten(self.global_pool(self.features(x)), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.forward_features(x)))


def _stem(in_channels: int, conv: ConvBlock, separable: bool) -> OrderedDict[str, nn.Module]:
    if separable:
        conv1 = SeparableConvBNAct(in_channels, 64, 7, stride=2, depth_multiplier=8,
                                   **conv.keywords)
    else:
        conv1 = conv(in_channels, 64, 7, stride=2)
    return OrderedDict(
        conv1=conv1,
        pool1=nn.MaxPool2d(3, 2, ceil_mode=True),
        conv2_reduce=conv(64, 64, 1),
        conv2=conv(64, 192, 3),
        pool2=nn.MaxPool2d(3, 2, ceil_mode=True),
    )


def _init_weights(model: nn.Module, act: str) -> None:
    # Kaiming keeps activations at unit scale without BN (the baseline needs it); for
    # sigmoid the gain is 1. The classifier starts near zero so initial logits are flat.
    gain_for = "relu" if act == "relu" else "sigmoid"
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity=gain_for)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
