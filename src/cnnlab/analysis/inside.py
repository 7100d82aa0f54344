"""The inside view: one picture through a trained model, with every layer's and block's output, each Inception branch's
share and each residual path's size, and any parts of the network switched off.

A *part* is what a student can switch off:
- a branch of an Inception-like block (`BranchedBlock`), "incep1.5x5": its channels of the block's output are zeros;
- a residual block's skip (`SkipBlock`), "rblock2.skip": the block outputs relu(F(x)), its conv path alone;
- a residual block's conv path, "rblock2.conv": the block outputs relu(skip(x)), its skip alone.

The model runs on its real modules, through forward hooks that call the blocks' own `branches`/`paths` split, so any
model built from those two interfaces works without a copy of its code. Hooks are state of a module that a server
shares between requests, so two rules keep it safe:
- every hook is removed when the call ends, also when it raises (a context manager);
- a hook acts only in the thread that registered it, so another thread's forward (a predict, or an explain with other
  parts switched off) passes it by. PyTorch copies a module's hooks into a tuple before calling them, so hooks added
  and removed by one thread while another runs the model do not disturb it. Unlike a lock, this lets concurrent
  requests run side by side (benchmarks/inside.py measures the cost of one call).
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.blocks import BranchedBlock, SkipBlock
from cnnlab.runs.model import Picture, TrainedModel, model_input, tta_forward

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PNG_COMPRESS_LEVEL = 1  # the atlases are a few kB: zlib's fastest level keeps them small and costs ~0.1 ms each


# ---- parts: what can be switched off -------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    """A part of a model that can be switched off."""

    name: str  # "<block>.<branch>" ("incep1.5x5"), "<block>.skip" or "<block>.conv" ("stages.1.skip")
    block: str  # the block's dotted module name: "incep1", "rblock2", "stages.1"
    kind: str  # "branch" | "skip" | "conv"


def parts(model: nn.Module) -> list[Part]:
    """Every switchable part of `model`: each Inception-like block's branches, in concatenation order, and each
    residual block's skip and conv path, blocks in the order the model registers them (its forward order for every
    registered model)."""
    out: list[Part] = []
    for name, module in model.named_modules():
        if isinstance(module, BranchedBlock):
            out += [Part(f"{name}.{branch}", name, "branch") for branch in module.branch_names]
        elif isinstance(module, SkipBlock):
            out += [Part(f"{name}.{path}", name, path) for path in ("skip", "conv")]
    return out


class UnknownPart(ValueError):
    """Part names the model does not have. `unknown`: those names; `valid`: the model's part names."""

    def __init__(self, unknown: Iterable[object], valid: Iterable[str]) -> None:
        self.unknown, self.valid = tuple(unknown), tuple(valid)
        names = ", ".join(repr(n) for n in self.unknown)
        choose = (f"choose from {', '.join(self.valid)}" if self.valid
                  else "this model has no parts to switch off (no Inception or residual blocks)")
        super().__init__(f"unknown part{'s' if len(self.unknown) > 1 else ''} {names}; {choose}")


def resolve_parts(model: nn.Module, silence: Iterable[str] | str) -> list[Part]:
    """The parts named in `silence` (one name or several; repeats count once), in `parts` order.

    Raises UnknownPart naming every name the model does not have and listing those it has.
    """
    names = [silence] if isinstance(silence, str) else list(silence)
    known = parts(model)
    valid = {p.name for p in known}
    unknown = []  # in the order given, each once; anything but a string (a number from JSON) is unknown too
    for n in names:
        if (not isinstance(n, str) or n not in valid) and n not in unknown:
            unknown.append(n)
    if unknown:
        raise UnknownPart(unknown, [p.name for p in known])
    return [p for p in known if p.name in names]


# ---- hooks that act in one thread only ------------------------------------------------------------------------

Hook = Callable[[nn.Module, tuple, object], object]


@contextlib.contextmanager
def _thread_hooks(hooks: Iterable[tuple[nn.Module, Hook]]) -> Iterator[None]:
    """Forward hooks that act only in the calling thread, registered in order (a hook sees the output the hooks
    before it on the same module returned) and all removed on leaving, also on an error."""
    me = threading.get_ident()

    def only_here(hook: Hook) -> Hook:
        def run(module, args, output):
            return hook(module, args, output) if threading.get_ident() == me else None

        return run

    handles = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(only_here(hook)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _block_hook(block: nn.Module, off: set[str], record: dict | None) -> Hook:
    """The hook that switches the parts `off` of `block` (branch names, or "skip" and "conv") and, with `record`,
    keeps what the block computed before its switches: its output (a BranchedBlock) or (skip, conv) (a SkipBlock).
    Only the first call is kept: a mirror-averaged prediction runs the model twice."""
    if isinstance(block, SkipBlock):
        def hook(module, args, output):
            skip, conv = module.paths(args[0])  # the block's own split, computed again: it cannot be read from forward
            if record is not None:
                record.setdefault(module, (skip, conv))
            if not off:
                return None
            kept = [path for name, path in (("skip", skip), ("conv", conv)) if name not in off]
            return F.relu(kept[0]) if kept else torch.zeros_like(output)

        return hook

    slices = [block.branch_slices()[name] for name in off]

    def hook(module, args, output):
        if record is not None:
            record.setdefault(module, output)
        if not slices:
            return None
        output = output.clone()
        for s in slices:
            output[:, s] = 0
        return output

    return hook


def _switch_hooks(model: nn.Module, off: list[Part], record: dict | None = None,
                  blocks: Iterable[nn.Module] = ()) -> list[tuple[nn.Module, Hook]]:
    """One hook per block with a part `off`, and per block in `blocks` (recorded even with nothing off)."""
    modules = dict(model.named_modules())
    by_block: dict[nn.Module, set[str]] = {m: set() for m in blocks}
    for part in off:
        by_block.setdefault(modules[part.block], set()).add(part.name.rsplit(".", 1)[1])
    return [(block, _block_hook(block, names, record)) for block, names in by_block.items()]


@contextlib.contextmanager
def switched_off(model: nn.Module, silence: Iterable[str] | str) -> Iterator[nn.Module]:
    """Within the context, in this thread only, the named parts of `model` are switched off (see the module's
    docstring); other threads see the model as it is. Raises UnknownPart before anything changes."""
    off = resolve_parts(model, silence)
    with _thread_hooks(_switch_hooks(model, off)):
        yield model


# ---- the inside view ------------------------------------------------------------------------------------------

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
        return _png_data_url(self.atlas)

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
            png = _png_data_url(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
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
    hooks = _switch_hooks(model, off, computed, blocks) + [(m, keep) for m in units.values()]
    with torch.inference_mode():
        full = trained.predict_prepared(image).probabilities if off else None  # before any hook, as predict runs
        x = model_input(torch.from_numpy(image).to(trained.device).unsqueeze(0), trained.config)  # as predict_prepared
        with _thread_hooks(hooks):
            logits = tta_forward(model, x, trained.config.tta_hflip)
        probabilities = torch.softmax(logits.float(), dim=1)[0].tolist()
        off_names = {p.name for p in off}
        layers = _layers(units, seen, computed, off_names, max_maps)
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


def _png_data_url(pixels: np.ndarray) -> str:
    """A uint8 (H, W) grey or (H, W, 3) RGB image as a PNG data URL."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---- the notebook's figure ------------------------------------------------------------------------------------

def plot_inside(explanation: Explanation, path: str | Path | None = None, title: str = "") -> "Figure":
    """The inside view as a matplotlib Figure (also written to `path` unless None): the image and the probabilities
    (with nothing switched off as outlines when parts are), then a row per layer: its maps, and each branch's maps
    and share or each residual path's maps and norm; a vector layer as bars."""
    from matplotlib.figure import Figure  # not pyplot's: nothing to close or leak, no backend switched

    from cnnlab.plotting import font_family

    e = explanation
    cols = 1 + max([len(layer.branches) or len(layer.paths) for layer in e.layers] + [1])
    fig = Figure(figsize=(2.4 * cols, 2.3 * (1 + len(e.layers))))
    grid = fig.add_gridspec(1 + len(e.layers), cols)

    image = e.image if e.image.ndim == 2 else (e.image[0] if e.image.shape[0] != 3 else e.image.transpose(1, 2, 0))
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(image, cmap="gray")
    ax.set_title(f"input {'x'.join(map(str, e.image.shape))}", fontsize=8)
    ax.set_axis_off()
    ax = fig.add_subplot(grid[0, 1:])
    pos = range(len(e.classes))
    ax.bar(pos, e.probabilities, color="tab:blue", label="switched" if e.silenced else "probability")
    if e.silenced:
        ax.bar(pos, e.probabilities_full, fill=False, edgecolor="black", label="nothing off")
        ax.legend(fontsize=7)
    ax.set_xticks(list(pos), e.classes, fontsize=7, fontfamily=font_family(*e.classes))
    ax.set_ylim(0, 1)
    ax.tick_params(labelsize=7)

    for r, layer in enumerate(e.layers, start=1):
        ax = fig.add_subplot(grid[r, 0])
        ax.set_title(f"{layer.name} ({layer.kind}) {'x'.join(map(str, layer.shape))}", fontsize=8)
        if layer.maps is None:
            ax.bar(range(len(layer.values or ())), layer.values or ())
            ax.tick_params(labelsize=6)
            continue
        ax.imshow(layer.maps.atlas, cmap="gray", interpolation="nearest")
        ax.set_axis_off()
        views = [(b.maps, f"{b.name}: {100 * b.share:.0f}%", b.silenced) for b in layer.branches]
        views += [(p.maps, f"{p.name}: |{p.norm:.3g}|", p.silenced) for p in layer.paths]
        for c, (maps, label, off) in enumerate(views, start=1):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(maps.atlas, cmap="gray", interpolation="nearest", alpha=0.35 if off else 1.0)
            ax.set_title(label + (" (off)" if off else ""), fontsize=8, color="tab:red" if off else "black")
            ax.set_axis_off()
    off = f" with {', '.join(e.silenced)} off" if e.silenced else ""
    heading = title or f"{e.model}{off}: {e.classes[e.top]} ({100 * e.probabilities[e.top]:.1f}%)"
    fig.suptitle(heading, fontfamily=font_family(heading))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
