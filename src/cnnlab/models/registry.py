"""A tiny model registry: builders stored by name, so the CLI, benchmarks and demos all read one list."""

from __future__ import annotations

from typing import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

# The networks of the lectures, the ones `cnnlab train --model lecture` (and `make run`) train and compare.
LECTURE_MODELS = ("basic_cnn", "inception_net", "resnet")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: store a model builder under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of every registered model, in registration order."""
    return list(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name; kwargs go to its builder (in_channels, num_classes, image_size)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, trainable or not."""
    return sum(p.numel() for p in model.parameters())
