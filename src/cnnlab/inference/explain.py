"""The inside view: one picture through a trained model, stage by stage as the lecture draws them (every
convolution, pooling, ReLU, concatenation, sum, flatten and linear layer with its true shape and the arithmetic that
gives it), each Inception branch's share and each residual path's size, with any parts switched off
(cnnlab.models.switches); and, for one value of one stage, how it was computed (`explain_value`).

`explain` runs the trained model's one forward of a picture (`TrainedModel.forward_prepared`, what predict runs)
under a trace (cnnlab.models.stages) with the switches' hooks first, so every stage is shown as the switched network
computes it. Hooks act in the calling thread alone and are removed when the call ends, so a server's threads share
one model. The maps are RGBA PNG data URLs on one diverging colour scale (negative blue, zero white, positive red,
`COLOURS`), scaled per map, per stage or over the whole picture (`SCALES`); `cnnlab.plotting.plot_inside` draws a
whole explanation with the same colours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable

import numpy as np
import torch

from cnnlab.models.stages import INPUT, Block, Stage, Trace, lines, tracing
from cnnlab.models.switches import resolve_parts, switch_hooks
from cnnlab.plotting import DIVERGING, diverging_rgba, png_data_url
from cnnlab.runs.prediction import Picture
from cnnlab.runs.trained import TrainedModel

PNG_COMPRESS_LEVEL = 1  # the atlases are a few kB: zlib's fastest level keeps them small and costs ~0.1 ms each
SCALES = ("stage", "map", "global")  # what one colour scale spans: a stage's maps, each map alone, every map shown
COLOURS = DIVERGING  # the colour scale's stops, from -limit through 0 to +limit (the page's legend draws the same)


@dataclass(frozen=True, repr=False)
class Maps:
    """The first `count` of a feature map's `channels` channels, tiled row-major into one RGBA image of grid[0] x
    grid[1] tiles of size[0] x size[1] pixels with a 1-pixel transparent gap between tiles; a slot with no map is
    transparent too. Each value v of tile i is coloured by v / limits[i] on the diverging scale (-1 blue, 0 white,
    +1 red); `scope` says what a limit spans: "stage" (one limit, the largest |value| of the stage's maps), "map"
    (each map's own) or "global" (the largest over every map of the picture)."""

    atlas: np.ndarray  # uint8 (rows * h + rows - 1, cols * w + cols - 1, 4)
    grid: tuple[int, int]
    size: tuple[int, int]
    count: int
    channels: int
    limits: tuple[float, ...]  # per tile
    scope: str
    values: torch.Tensor = field(repr=False)  # the drawn channels' values (count x h x w, float)

    def tile(self, i: int) -> np.ndarray:
        """Channel i's tile (h x w x 4)."""
        h, w = self.size
        r, c = divmod(i, self.grid[1])
        return self.atlas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w]

    @cached_property
    def png(self) -> str:
        return png_data_url(self.atlas, PNG_COMPRESS_LEVEL, channels_last=True)

    def as_dict(self) -> dict:
        return {"png": self.png, "grid": list(self.grid), "size": list(self.size), "count": self.count,
                "channels": self.channels, "gap": 1, "limits": [float(v) for v in self.limits], "scope": self.scope}


@dataclass(frozen=True)
class StageView:
    """One stage inside a branch or path, in words: what it does, its shape, its arithmetic."""

    name: str  # "incep1.branch5x5_2", "rblock1.relu1"
    op: str  # cnnlab.models.stages.Stage.op
    shape: tuple[int, ...]
    arithmetic: str
    stage: int  # its index in the forward (for explain_value)
    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "shape": list(self.shape), "arithmetic": self.arithmetic,
                "stage": self.stage, "settings": _plain(self.settings)}


@dataclass(frozen=True)
class BranchView:
    name: str  # the branch's name in its block: "5x5"
    part: str  # its part name: "incep1.5x5"
    shape: tuple[int, ...]  # C, H, W
    share: float | None  # its share of the block's output energy (sum of squares); None when it is off
    silenced: bool
    maps: Maps | None  # its output; None when it is off (it gives nothing)
    stages: tuple[StageView, ...] = ()
    stage: int = INPUT  # the stage that gives its output

    def as_dict(self) -> dict:
        return {"name": self.name, "part": self.part, "shape": list(self.shape), "share": self.share,
                "silenced": self.silenced, "maps": None if self.maps is None else self.maps.as_dict(),
                "stages": [s.as_dict() for s in self.stages], "stage": self.stage}


@dataclass(frozen=True)
class PathView:
    name: str  # "skip", "conv" or "sum"
    part: str | None  # "rblock1.skip", "rblock1.conv"; None for the sum
    norm: float | None  # L2 norm for this image; None for a path that is off. The sum: the block's output as it is
    silenced: bool
    maps: Maps | None
    stages: tuple[StageView, ...] = ()
    stage: int = INPUT

    def as_dict(self) -> dict:
        return {"name": self.name, "part": self.part, "norm": self.norm, "silenced": self.silenced,
                "maps": None if self.maps is None else self.maps.as_dict(),
                "stages": [s.as_dict() for s in self.stages], "stage": self.stage}


@dataclass(frozen=True)
class LayerView:
    """One top-level stage of the network, or one block (its branches or paths, then how they join)."""

    name: str  # "conv1", "pool1", "relu1", "incep1", "stages.0", "flatten", "fc"
    kind: str  # conv | pool | relu | bn | flatten | linear | globalpool | inception | residual | other
    shape: tuple[int, ...]  # C, H, W of a feature map; N of a vector
    maps: Maps | None  # None for a vector
    values: list[float] | None = None  # a vector's values (the logits of the last linear layer)
    branches: tuple[BranchView, ...] = ()  # an Inception-like block's
    paths: tuple[PathView, ...] = ()  # a residual block's: skip, conv, sum
    arithmetic: str = ""  # how its shape follows from its input's: "28 − 5 + 1 = 24"
    op: str = ""  # the stage's op (cnnlab.models.stages); a block's: "inception" or "residual"
    stage: int = INPUT  # the stage that gives its output (a block: its last)
    join: tuple[StageView, ...] = ()  # a block's: its concatenation, or its sum and what follows it
    in_shape: tuple[int, ...] = ()
    settings: dict = field(default_factory=dict)
    title: str = ""  # a block's: what it is called ("inception", "dense" or "residual": the page's kind.<title>)

    def as_dict(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "title": self.title or self.kind, "op": self.op, "shape": list(self.shape),
               "in_shape": list(self.in_shape), "arithmetic": self.arithmetic, "stage": self.stage,
               "settings": _plain(self.settings), "maps": None if self.maps is None else self.maps.as_dict()}
        if self.values is not None:
            out["values"] = self.values
        if self.kind == "inception":
            out["branches"] = [b.as_dict() for b in self.branches]
        if self.kind == "residual":
            out["paths"] = [p.as_dict() for p in self.paths]
        if self.join:
            out["join"] = [j.as_dict() for j in self.join]
        return out


@dataclass(frozen=True, repr=False)
class Explanation:
    """What `explain` saw: the probabilities with and without the switched-off parts, the image the model read, and
    every stage of the network as switched."""

    model: str  # the registry's name of the network
    classes: tuple[str, ...]
    silenced: tuple[str, ...]  # part names, in `parts` order
    probabilities: list[float]  # with the parts switched off
    probabilities_full: list[float]  # with nothing switched off
    image: np.ndarray  # the uint8 image the model saw: (H, W) grey or (C, H, W)
    layers: tuple[LayerView, ...]
    scale: str = "stage"  # what one colour scale spans (SCALES)
    label_smoothing: float = 0.0  # of the training: it aims a trained model at 1 - ls + ls / classes, not 1
    lines: tuple[str, ...] = ()  # the stages in words (cnnlab.models.stages.lines): what the notebook prints

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
                f"{len(self.layers)} stages)")

    def as_dict(self) -> dict:
        """JSON-ready: numbers, lists, and PNG images as data URLs."""
        image = self.image if self.image.ndim == 3 else self.image[None]
        if image.shape[0] in (1, 3):
            png = png_data_url(image, PNG_COMPRESS_LEVEL)
        else:  # neither grey nor RGB: its channels side by side
            png = _maps(torch.from_numpy(image).float(), len(image), "map", None).png
        return {
            "classes": list(self.classes),
            "silenced": list(self.silenced),
            "probabilities": self.probabilities,
            "probabilities_full": self.probabilities_full,
            "top": self.top,
            "top_full": self.top_full,
            "input": {"shape": list(image.shape), "png": png},
            "layers": [layer.as_dict() for layer in self.layers],
            "scale": self.scale,
            "colours": list(COLOURS),
            "label_smoothing": self.label_smoothing,
        }


def explain(trained: TrainedModel, picture: Picture, silence: Iterable[str] | str = (), max_maps: int = 32,
            scale: str = "stage") -> Explanation:
    """One picture through `trained`'s network with the parts named in `silence` switched off: every stage of its
    forward (a block as its branches or paths and their join), each Inception branch's share and each residual
    path's norm, and the probabilities with and without the switches.

    `picture`: what `TrainedModel.predict` reads; it is prepared and standardised exactly as predict does.
    `max_maps`: at most this many channels of each feature map are drawn. `scale`: what one colour scale spans
    (SCALES: "stage", "map" or "global").

    What a student sees:
    - each stage's output as the switched network computes it, with its shape and the arithmetic that gives it;
    - a branch's share and maps, and a skip's or conv path's norm and maps, as computed in the switched network (an
      earlier switch changes what later blocks receive); a part that is off shows nothing (it gives nothing). Shares
      are of the sum of squares over the branches that are on, so they sum to 1;
    - a residual block's "sum" is its output: relu(skip + conv), or relu of the path left on (the block's own `after`
      in place of the ReLU: nothing after a pre-activation unit's sum).

    Raises UnknownPart for a part the model does not have, cnnlab.data.tensors.pictures.ImageError for a picture that
    cannot be read, ValueError for max_maps < 1 or an unknown scale. The model is left as it was, and other threads
    may use it meanwhile.
    """
    if max_maps < 1:
        raise ValueError(f"max_maps must be >= 1, got {max_maps}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    model = trained.network
    off = resolve_parts(model, silence)
    image = trained.prepare(picture)
    full = trained.forward_prepared(image).tolist() if off else None  # before any hook: what predict gives
    with tracing(model, switch_hooks(model, off)) as traced:
        probabilities = trained.forward_prepared(image).tolist()  # the same forward, traced
    with torch.inference_mode():
        layers = _layers(traced.trace, {p.name for p in off}, max_maps, scale)
    return Explanation(model=trained.config.model, classes=trained.classes, silenced=tuple(p.name for p in off),
                       probabilities=probabilities, probabilities_full=probabilities if full is None else full,
                       image=image, layers=tuple(layers), scale=scale,
                       label_smoothing=float(getattr(trained.config, "label_smoothing", 0.0) or 0.0),
                       lines=tuple(lines(traced.trace)))


def _view(s: Stage) -> StageView:
    return StageView(s.name, s.op, tuple(s.shape), s.arithmetic, s.index, dict(s.settings))


def _kind(op: str) -> str:
    return {"maxpool": "pool", "avgpool": "pool"}.get(op, op if op in ("conv", "relu", "bn", "flatten", "linear",
                                                                       "globalpool") else "other")


def _layers(trace: Trace, off: set[str], max_maps: int, scale: str) -> list[LayerView]:
    """The views of every item of the trace. Maps are made last, once every drawn tensor is known (a global scale
    spans them all)."""
    drawn: list[torch.Tensor] = []  # every tensor drawn, for the global limit

    def later(t: torch.Tensor) -> int:
        drawn.append(t)
        return len(drawn) - 1

    made: list[dict] = []
    for item in trace.items:
        if isinstance(item, Stage):
            out = item.output
            if out.dim() != 3:  # a vector: only the logits of a linear layer are sent as numbers
                values = out.flatten().float().tolist() if item.op == "linear" else None
                made.append({"cls": LayerView, "name": item.name, "kind": _kind(item.op), "shape": tuple(out.shape),
                             "maps": None, "values": values, "arithmetic": item.arithmetic,
                             "op": item.op, "stage": item.index, "in_shape": tuple(item.in_shapes[0]),
                             "settings": dict(item.settings)})
                continue
            made.append({"cls": LayerView, "name": item.name, "kind": _kind(item.op), "shape": tuple(out.shape),
                         "maps": later(out), "arithmetic": item.arithmetic, "op": item.op, "stage": item.index,
                         "in_shape": tuple(item.in_shapes[0]), "settings": dict(item.settings)})
            continue
        made.append(_block_view(trace, item, off, later))

    limits_all = max((float(t.abs().max()) for t in drawn if t.numel()), default=0.0)
    maps = [_maps(t, max_maps, scale, limits_all) for t in drawn]

    def fill(d: dict) -> Any:
        d = dict(d)
        cls = d.pop("cls")
        if isinstance(d.get("maps"), int):
            d["maps"] = maps[d["maps"]]
        for key in ("branches", "paths"):
            if key in d:
                d[key] = tuple(fill(v) for v in d[key])
        return cls(**d)

    return [fill(d) for d in made]


def _block_view(trace: Trace, block: Block, off: set[str], later) -> dict:
    name = block.name
    out = block.output
    in_shape = tuple(trace.tensor(block.input).shape)
    common = {"cls": LayerView, "name": name, "kind": block.kind, "shape": tuple(out.shape), "maps": later(out),
              "arithmetic": block.arithmetic, "op": block.kind, "stage": block.join[-1].index if block.join else INPUT,
              "join": tuple(_view(s) for s in block.join), "in_shape": in_shape,
              "title": getattr(block.module, "TITLE", block.kind)}
    if block.kind == "inception":
        outputs = {b.name: trace.tensor(b.output) for b in block.branches}
        on = {b: t for b, t in outputs.items() if f"{name}.{b}" not in off}
        energy = {b: float(t.float().pow(2).sum()) for b, t in on.items()}
        total = sum(energy.values())
        branches = []
        for b in block.branches:
            part = f"{name}.{b.name}"
            silenced = part in off
            branches.append({"cls": BranchView, "name": b.name, "part": part, "shape": tuple(outputs[b.name].shape),
                             "share": None if silenced else (energy[b.name] / total if total > 0 else 0.0),
                             "silenced": silenced, "maps": None if silenced else later(outputs[b.name]),
                             "stages": tuple(_view(s) for s in b.stages), "stage": b.output})
        return {**common, "branches": tuple(branches)}
    paths = []
    for b in block.branches:  # skip, then conv
        t = trace.tensor(b.output)
        part = f"{name}.{b.name}"
        silenced = part in off
        paths.append({"cls": PathView, "name": b.name, "part": part, "norm": None if silenced else float(t.float().norm()),
                      "silenced": silenced, "maps": None if silenced else later(t),
                      "stages": tuple(_view(s) for s in b.stages), "stage": b.output})
    paths.append({"cls": PathView, "name": "sum", "part": None, "norm": float(out.float().norm()), "silenced": False,
                  "maps": common["maps"], "stages": tuple(_view(s) for s in block.join), "stage": common["stage"]})
    return {**common, "paths": tuple(paths)}


def _maps(t: torch.Tensor, max_maps: int, scale: str, global_limit: float | None) -> Maps:
    """C x H x W -> the first min(C, max_maps) channels coloured on the diverging scale, tiled in a near-square grid
    with 1-pixel transparent gaps."""
    channels, h, w = t.shape
    n = min(channels, max_maps)
    x = torch.nan_to_num(t[:n].float())
    if scale == "map":
        limits = x.abs().amax(dim=(1, 2)).tolist()
    elif scale == "global" and global_limit is not None:
        limits = [global_limit] * n
    else:
        limits = [float(x.abs().max()) if x.numel() else 0.0] * n
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    atlas = np.zeros((rows * (h + 1) - 1, cols * (w + 1) - 1, 4), np.uint8)  # transparent: gaps and empty slots
    lim = torch.tensor([v if v > 0 else 1.0 for v in limits]).view(n, 1, 1)
    coloured = diverging_rgba((x / lim).clamp(-1, 1).cpu().numpy())  # n x h x w x 4
    for i in range(n):
        r, c = divmod(i, cols)
        atlas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = coloured[i]
    return Maps(atlas, (rows, cols), (h, w), n, channels, tuple(limits), scale, x)


def _plain(settings: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
