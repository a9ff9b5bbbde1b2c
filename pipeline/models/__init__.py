"""Models by name: `create_model("bn_inception", num_classes=1000, bn=True, ...)`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from pipeline.models.bn_inception import BNInception

MODELS: dict[str, Callable[..., nn.Module]] = {
    "bn_inception": BNInception,
}


def create_model(name: str, **kwargs) -> nn.Module:
    """Builds the registered model `name`; kwargs go to its constructor."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


__all__ = ["MODELS", "BNInception", "create_model"]
