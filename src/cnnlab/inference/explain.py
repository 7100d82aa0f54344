"""The inside view: one picture through a trained model, with every layer's and block's output, each Inception branch's
share and each residual path's size, and any parts of the network switched off (cnnlab.models.switches).

`explain` runs the trained model's one forward of a picture (`TrainedModel.forward_prepared`, what predict runs)
with hooks on the real modules that record what each one computes; the switches' hooks come first on a block, so a
layer is shown as the switched network computes it. Hooks act in the calling thread alone and are removed when the
call ends (see cnnlab.models.switches), so a server's threads share one model. The maps it draws are PNG data URLs
(cnnlab.plotting.png_data_url); `cnnlab.plotting.plot_inside` draws a whole explanation as a matplotlib figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable

import numpy as np
import torch
from torch import nn

from cnnlab.models.blocks import BranchedBlock, SkipBlock
from cnnlab.models.switches import resolve_parts, switch_hooks, thread_hooks
from cnnlab.plotting import png_data_url
from cnnlab.runs.prediction import Picture
from cnnlab.runs.trained import TrainedModel

PNG_COMPRESS_LEVEL = 1  # the atlases are a few kB: zlib's fastest level keeps them small and costs ~0.1 ms each


@dataclass(frozen=True, repr=False)
class Maps:
    """The first `count` of a feature map's `channels` channels, each min-max scaled to 0..255 (a constant map is all
    0), tiled row-major into one grey image of grid[0] x grid[1] tiles of size[0] x size[1] pixels."""

    atlas: np.ndarray  # uint8 (grid[0] * size[0], grid[1] * size[1])
    grid: tuple[int, int]
    size: tuple[int, int]
    count: int
    channels: int

    def tile(self, i: int) -> np.ndarray:
        """Channel i's map."""
        h, w = self.size
        r, c = divmod(i, self.grid[1])
        return self.atlas[r * h:(r + 1) * h, c * w:(c + 1) * w]

    @cached_property
    def png(self) -> str:
        return png_data_url(self.atlas, PNG_COMPRESS_LEVEL)

    def as_dict(self) -> dict:
        return {"png": self.png, "grid": list(self.grid), "size": list(self.size), "count": self.count,
                "channels": self.channels}


@dataclass(frozen=True)
class BranchView:
    name: str  # the branch's name in its block: "5x5"
    part: str  # its part name: "incep1.5x5"
    shape: tuple[int, ...]  # C, H, W
    share: float  # its share of the block's output energy (sum of squares), as computed before switching
    silenced: bool
    maps: Maps  # its output as computed, before switching (what it would give; the layer's maps show what it gives)

    def as_dict(self) -> dict:
        return {"name": self.name, "part": self.part, "shape": list(self.shape), "share": self.share,
                "silenced": self.silenced, "maps": self.maps.as_dict()}


@dataclass(frozen=True)
class PathView:
    name: str  # "skip", "conv" or "sum"
    part: str | None  # "rblock1.skip", "rblock1.conv"; None for the sum
    norm: float  # L2 norm for this image: skip and conv as computed before switching; the sum as the block outputs it
    silenced: bool
    maps: Maps

    def as_dict(self) -> dict:
        return {"name": self.name, "part": self.part, "norm": self.norm, "silenced": self.silenced,
                "maps": self.maps.as_dict()}


@dataclass(frozen=True)
class LayerView:
    name: str  # dotted module name: "conv1", "incep1", "stages.0", "fc"
    kind: str  # "conv" | "inception" | "residual" | "linear" | "other"
    shape: tuple[int, ...]  # C, H, W of a feature map; N of a vector
    maps: Maps | None  # None for a vector
    values: list[float] | None = None  # a vector's values (the logits of the last linear layer)
    branches: tuple[BranchView, ...] = ()  # an Inception-like block's
    paths: tuple[PathView, ...] = ()  # a residual block's: skip, conv, sum

    def as_dict(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "shape": list(self.shape),
               "maps": None if self.maps is None else self.maps.as_dict()}
        if self.values is not None:
            out["values"] = self.values
        if self.kind == "inception":
            out["branches"] = [b.as_dict() for b in self.branches]
        if self.kind == "residual":
            out["paths"] = [p.as_dict() for p in self.paths]
        return out


@dataclass(frozen=True, repr=False)
class Explanation:
    """What `explain` saw: the probabilities with and without the switched-off parts, the image the model read, and
    every layer's output in the network as switched."""

    model: str  # the registry's name of the network
    classes: tuple[str, ...]
    silenced: tuple[str, ...]  # part names, in `parts` order
    probabilities: list[float]  # with the parts switched off
    probabilities_full: list[float]  # with nothing switched off
    image: np.ndarray  # the uint8 image the model saw: (H, W) grey or (C, H, W)
    layers: tuple[LayerView, ...]

    @property
    def top(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def top_full(self) -> int:
        return int(np.argmax(self.probabilities_full))

    def layer(self, name: str) -> LayerView:
        return next(layer for layer in self.layers if layer.name == name)

    def __repr__(self) -> str:
        off = f", {', '.join(self.silenced)} off" if self.silenced else ""
        return (f"Explanation({self.model}{off}: {self.classes[self.top]!r} {100 * self.probabilities[self.top]:.1f}%, "
                f"{len(self.layers)} layers)")

    def as_dict(self) -> dict:
        """JSON-ready: numbers, lists, and PNG images as data URLs."""
        image = self.image if self.image.ndim == 3 else self.image[None]
        if image.shape[0] in (1, 3):
            png = png_data_url(image, PNG_COMPRESS_LEVEL)
        else:  # neither grey nor RGB: its channels side by side
            png = _maps(torch.from_numpy(image), len(image)).png
        return {
            "classes": list(self.classes),
            "silenced": list(self.silenced),
            "probabilities": self.probabilities,
            "probabilities_full": self.probabilities_full,
            "top": self.top,
            "top_full": self.top_full,
            "input": {"shape": list(image.shape), "png": png},
            "layers": [layer.as_dict() for layer in self.layers],
        }


def explain(trained: TrainedModel, picture: Picture, silence: Iterable[str] | str = (), max_maps: int = 32) -> Explanation:
    """One picture through `trained`'s network with the parts named in `silence` switched off: every top-level
    stage's output (a Sequential of blocks, such as `stages`, counts each block), each Inception branch's share and
    each residual path's norm, and the probabilities with and without the switches.

    `picture`: what `TrainedModel.predict` reads; it is prepared and standardised exactly as predict does.
    `max_maps`: at most this many channels of each feature map are drawn.

    What a student sees:
    - a layer's output is what the switched network computes. A plain layer (a convolution) is shown as the next
      layer reads it, with the pooling and ReLU the forward applies to it ("conv1" of the lecture's nets is 10 x 12
      x 12: conv, pool, relu, as the lecture writes them on one line), unless the next one reads no feature map;
      a block is shown as it outputs (its branches or paths add up to it);
    - a branch's share and maps, and a skip's or conv path's norm and maps, are the path as computed, before its own
      switch, in the switched network (a silenced branch shows what it would give; an earlier switch changes what
      later blocks receive). Shares are of the block's sum of squares over all its branches, so they sum to 1;
    - a residual block's "sum" is its output: relu(skip + conv), or relu of the path left on.

    Raises UnknownPart for a part the model does not have, cnnlab.data.tensors.pictures.ImageError for a picture that cannot
    be read, ValueError for max_maps < 1. The model is left as it was, and other threads may use it meanwhile.
    """
    if max_maps < 1:
        raise ValueError(f"max_maps must be >= 1, got {max_maps}")
    model = trained.network
    off = resolve_parts(model, silence)
    image = trained.prepare(picture)
    units = _units(model)
    blocks = [m for m in units.values() if isinstance(m, (BranchedBlock, SkipBlock))]
    computed: dict[nn.Module, object] = {}  # block -> its output (branches) or (skip, conv), before switching
    seen: dict[nn.Module, tuple[object, object]] = {}  # unit -> (input, output as switched), in forward order

    def keep(module, args, output):
        seen.setdefault(module, (args[0] if args else None, output))

    # The switches come first on a block, so the unit sees the block's output as switched.
    hooks = switch_hooks(model, off, computed, blocks) + [(m, keep) for m in units.values()]
    full = trained.forward_prepared(image).tolist() if off else None  # before any hook: what predict gives
    with thread_hooks(hooks):
        probabilities = trained.forward_prepared(image).tolist()  # the same forward, seen through the hooks
    with torch.inference_mode():
        layers = _layers(units, seen, computed, {p.name for p in off}, max_maps)
    return Explanation(model=trained.config.model, classes=trained.classes, silenced=tuple(p.name for p in off),
                       probabilities=probabilities, probabilities_full=probabilities if full is None else full,
                       image=image, layers=tuple(layers))


def _units(model: nn.Module) -> dict[str, nn.Module]:
    """The top-level stages by dotted name: each child module, or each child of a Sequential that holds blocks
    (ResNetBN's `stages`); a Sequential of plain layers (ConvBN) is one stage."""
    out: dict[str, nn.Module] = {}

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.Sequential) and any(isinstance(c, (BranchedBlock, SkipBlock)) for c in child):
                walk(f"{prefix}{name}.", child)
            else:
                out[f"{prefix}{name}"] = child

    walk("", model)
    return out


def _kind(module: nn.Module) -> str:
    if isinstance(module, BranchedBlock):
        return "inception"
    if isinstance(module, SkipBlock):
        return "residual"
    if isinstance(module, nn.Linear):
        return "linear"
    first = next(iter(module.children()), None) if isinstance(module, nn.Sequential) else module
    return "conv" if isinstance(first, nn.Conv2d) else "other"


def _layers(units: dict[str, nn.Module], seen: dict, computed: dict, off: set[str], max_maps: int) -> list[LayerView]:
    names = {m: n for n, m in units.items()}
    order = [m for m in seen if isinstance(seen[m][1], torch.Tensor)]  # forward order; tuples and the like are not drawn
    layers = []
    for i, module in enumerate(order):
        name, kind, out = names[module], _kind(module), seen[module][1][0]
        if kind in ("conv", "other") and out.dim() == 3 and i + 1 < len(order):
            nxt = seen[order[i + 1]][0]
            if isinstance(nxt, torch.Tensor) and nxt.dim() == 4 and nxt.shape[1] == out.shape[0]:
                out = nxt[0]  # with the pooling and ReLU the forward applies between the two
        if out.dim() != 3:
            layers.append(LayerView(name, kind, tuple(out.shape), None, out.flatten().float().tolist()))
            continue
        maps = _maps(out, max_maps)
        branches: tuple[BranchView, ...] = ()
        paths: tuple[PathView, ...] = ()
        if kind == "inception":
            raw = computed[module][0]
            slices = module.branch_slices()
            energy = {b: float(raw[s].float().pow(2).sum()) for b, s in slices.items()}
            total = sum(energy.values())
            branches = tuple(
                BranchView(b, f"{name}.{b}", tuple(raw[s].shape), energy[b] / total if total > 0 else 0.0,
                           f"{name}.{b}" in off, _maps(raw[s], max_maps))
                for b, s in slices.items()
            )
        elif kind == "residual":
            skip, conv = (t[0] for t in computed[module])
            paths = tuple(
                PathView(p, f"{name}.{p}", float(t.float().norm()), f"{name}.{p}" in off, _maps(t, max_maps))
                for p, t in (("skip", skip), ("conv", conv))
            ) + (PathView("sum", None, float(out.float().norm()), False, maps),)
        layers.append(LayerView(name, kind, tuple(out.shape), maps, None, branches, paths))
    return layers


def _maps(t: torch.Tensor, max_maps: int) -> Maps:
    """C x H x W -> the first min(C, max_maps) channels, each scaled to 0..255, tiled in a near-square grid."""
    channels, h, w = t.shape
    n = min(channels, max_maps)
    x = torch.nan_to_num(t[:n].float())
    lo = x.amin(dim=(1, 2), keepdim=True)
    span = x.amax(dim=(1, 2), keepdim=True) - lo
    x = (x - lo) * (255.0 / torch.where(span > 0, span, torch.ones_like(span)))  # a constant map: (x - lo) is 0
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tiles = torch.zeros(rows * cols, h, w, device=x.device)
    tiles[:n] = x
    atlas = tiles.reshape(rows, cols, h, w).permute(0, 2, 1, 3).reshape(rows * h, cols * w)
    return Maps(atlas.round_().to(torch.uint8).cpu().numpy(), (rows, cols), (h, w), n, channels)
