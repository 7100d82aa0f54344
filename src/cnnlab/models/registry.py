"""A tiny model registry: each network's builder and the facts about it, stored by name, so the CLI, the recipes,
the benchmarks and the demos all read one list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """A registered network.

    Args:
        name: the --model name (the builder's function name).
        build: builder taking in_channels, num_classes, image_size.
        summary: one line for people (the builder's docstring).
        default_epochs: epochs of the default recipe on MNIST-sized data.
        lecture: one of the lecture's networks (`--model lecture`, `make run`).
        design: for a network that takes a design (`--block`: a student's own block, or the depth and width of a
            family of networks), the design's canonical spec from a given one ("" is its default design), a ValueError
            naming what is wrong with it; None for a network that takes none.
        family: the group `cnnlab models` lists it in (a key of FAMILIES).
    """

    name: str
    build: Callable[..., nn.Module]
    summary: str
    default_epochs: int
    lecture: bool
    design: Callable[[str], str] | None = None
    family: str = "stronger"

    def check_block(self, block: str) -> str:
        """`block` as a run of this model records it: the design's canonical spec ("" gives its default design), or
        "" for a model that takes no design (a ValueError when one is given to it)."""
        if self.design is not None:
            return self.design(block)
        if block:
            takers = [name for name, spec in _REGISTRY.items() if spec.design is not None]
            named = " and ".join(takers) if len(takers) <= 2 else \
                f"{', '.join(takers[:2])} and {len(takers) - 2} more (cnnlab models lists them)"
            raise ValueError(f"model {self.name!r} takes no block design (--block); {named or 'none'} "
                             f"{'does' if len(takers) == 1 else 'do'}")
        return ""

    def create(self, block: str = "", **kwargs) -> nn.Module:
        """The network, built with `block` (a design's spec) when it takes one; kwargs go to its builder."""
        if self.design is not None:
            return self.build(block=block, **kwargs)
        self.check_block(block)
        return self.build(**kwargs)


_REGISTRY: dict[str, ModelSpec] = {}

# The groups of networks, in the order `cnnlab models` lists them: the lecture's own, networks in its spirit with
# batch norm, and the papers of the lecture's reading list, each reproduced as a family.
FAMILIES = {
    "lecture": "the lecture's networks",
    "stronger": "the same two ideas with batch norm, width and depth (not in the lecture)",
    "designed": "a block of your own design in the lecture's skeleton",
    "identity-mappings": "residual units of He et al., Identity Mappings in Deep Residual Networks (ECCV 2016)",
    "densenet": "Huang et al., Densely Connected Convolutional Networks (CVPR 2017)",
}


def register_model(fn: Callable[..., nn.Module] | None = None, *, epochs: int = 15, lecture: bool = False,
                   design: Callable[[str], str] | None = None, family: str | None = None):
    """Decorator, bare or with facts: `@register_model(epochs=12, lecture=True)` stores a builder under its name.
    `family` defaults to "lecture" for the lecture's networks and "stronger" for the others."""
    group = family or ("lecture" if lecture else "stronger")
    if group not in FAMILIES:
        raise ValueError(f"unknown family {group!r}; choose from {', '.join(FAMILIES)}")

    def add(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if f.__name__ in _REGISTRY:
            raise ValueError(f"model {f.__name__!r} is already registered")
        summary = (f.__doc__ or f.__name__).strip().splitlines()[0]
        _REGISTRY[f.__name__] = ModelSpec(f.__name__, f, summary, epochs, lecture, design, group)
        return f

    return add(fn) if fn is not None else add


def get_model(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def list_models() -> list[str]:
    """Names of every registered model, in registration order."""
    return list(_REGISTRY)


def lecture_models() -> list[str]:
    """The lecture's networks, in registration order: what `--model lecture` and `make run` train."""
    return [name for name, spec in _REGISTRY.items() if spec.lecture]


def create_model(name: str, block: str = "", **kwargs) -> nn.Module:
    """Build a registered model by name, with its block design `block` if it takes one (a run's config.block);
    kwargs go to its builder (in_channels, num_classes, image_size)."""
    return get_model(name).create(block, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, trainable or not."""
    return sum(p.numel() for p in model.parameters())
