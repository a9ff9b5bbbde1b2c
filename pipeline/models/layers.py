"""Conv -> BatchNorm -> nonlinearity, the unit every BN-Inception layer is built from."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "sigmoid": nn.Sigmoid,
}


def make_activation(name: str | None) -> nn.Module:
    """The nonlinearity called `name`; None gives an identity (a linear layer)."""
    if name is None:
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class ConvBNAct(nn.Module):
    """z = g(BN(W u)) as in the paper; without BN the conv carries the bias BN would replace.

    `padding` defaults to "same" for odd kernels at stride 1 (kernel // 2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        bn: bool = True,
        act: str | None = "relu",
        bn_eps: float = 1e-5,
        bn_momentum: float | None = 0.1,
    ) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              groups=groups, bias=not bn)
        self.bn = (nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
                   if bn else nn.Identity())
        self.act = make_activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class SeparableConvBNAct(nn.Module):
    """Depthwise k x k conv (depth multiplier m) then a 1x1 ConvBNAct.

    The paper's appendix builds the first 7x7 conv this way (TF-slim: 3 -> 24 -> 64); as in
    TF-slim's separable_conv2d there is no BN or nonlinearity between the two convs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        depth_multiplier: int = 8,
        **conv_kwargs,
    ) -> None:
        super().__init__()
        mid = in_channels * depth_multiplier
        self.depthwise = nn.Conv2d(in_channels, mid, kernel_size, stride, kernel_size // 2,
                                   groups=in_channels, bias=False)
        self.pointwise = ConvBNAct(mid, out_channels, 1, **conv_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))
