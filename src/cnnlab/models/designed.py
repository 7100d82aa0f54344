"""A network whose block a student designs: the lecture's skeleton (conv 5x5 -> max pool 2 -> ReLU -> block -> conv 5x5
-> max pool 2 -> ReLU -> block -> linear, the head sized by a dry forward) around a block of their choosing, named by
one short spec:

    inception:1x1=16,5x5=16>24,3x3dbl=16>24>24,pool=24    the lecture's Inception block (inception_net's 97,298)
    inception:1x1=16,5x5=24                               two branches; the 5x5 convolves the input directly
    residual:16,skip                                      the lecture's residual block (resnet's 41,514)
    residual:16,noskip                                    the same two convolutions without the skip

An Inception design keeps any of the lecture's four branches, in its order (1x1; 1x1 -> 5x5; 1x1 -> 3x3 -> 3x3;
3x3 average pool -> 1x1), each with its widths: the output channels last, the 1x1 reduction's first where the branch
has one (5x5 and 3x3dbl), which a design may leave out. The block sits where the lecture's does, after 10 and then
20 channels. A residual design names the first block's channels; the second block has twice as many, as resnet's
16 and 32. Without its skip the block is still built, two 3x3 convolutions of the same shapes, so that a comparison
of the two trains the same parameters. Every width is bounded (WIDTHS): a design stays as cheap to train as the page's
budgets allow.

A design error is a DesignError (a ValueError) with a code and its parameters, which the page shows in its reader's
language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.blocks import BranchedBlock, ResidualBlock
from cnnlab.models.nets import _Net
from cnnlab.models.registry import register_model

WIDTHS = (1, 64)  # channels any width of a design may take, both included
MAX_SPEC = 200  # characters of a spec: the longest design is about 70

# The lecture's branches, in concatenation order: each a chain of convolutions (their kernel sides, and the attribute
# names the lecture's Inception block gives them), and whether its first, a 1x1 reduction, may be left out.
BRANCHES: dict[str, tuple[tuple[int, ...], tuple[str, ...], bool]] = {
    "1x1": ((1,), ("branch1x1",), False),
    "5x5": ((1, 5), ("branch5x5_1", "branch5x5_2"), True),
    "3x3dbl": ((1, 3, 3), ("branch3x3_1", "branch3x3_2", "branch3x3_3"), True),
    "pool": ((1,), ("branch_pool",), False),  # after a 3x3 average pooling
}
KINDS = ("inception", "residual")
# The lecture's own block of each kind as a design, and the registered network it makes (tested equal in parameters).
LECTURE = {"inception": "inception:1x1=16,5x5=16>24,3x3dbl=16>24>24,pool=24", "residual": "residual:16,skip"}
LECTURE_MODELS = {"inception": "inception_net", "residual": "resnet"}
DEFAULT = LECTURE["inception"]  # the design of `designed` without one


class DesignError(ValueError):
    """A design that cannot be built: one line, and a code with its parameters (the page's text for it)."""

    # Every code a design error carries, with the names of its parameters (the page's text for each: i18n.js's
    # "error.<code>", in each language).
    CODES: dict[str, tuple[str, ...]] = {
        "design.syntax": ("part",),
        "design.kind": ("kind", "valid"),
        "design.no_branch": ("valid",),
        "design.branch": ("branch", "valid"),
        "design.repeated": ("branch",),
        "design.widths": ("branch", "count", "expected"),
        "design.width": ("what", "value", "low", "high"),
        "design.skip": ("part",),
    }

    def __init__(self, code: str, message: str, **params: Any) -> None:
        if set(params) != set(self.CODES.get(code, ("",))):  # a mistake in this module, not in the design
            raise TypeError(f"design error {code!r} is not declared with the parameters {tuple(params)}")
        super().__init__(message)
        self.code, self.params = code, params


def _widths_taken(branch: str) -> tuple[int, ...]:
    """How many widths a branch's spec may give: its convolutions, or one fewer without its reduction."""
    kernels, _, optional = BRANCHES[branch]
    return (len(kernels) - 1, len(kernels)) if optional else (len(kernels),)


@dataclass(frozen=True)
class Design:
    """A block design, checked whole when made (a DesignError names what is wrong).

    Args:
        kind: "inception" or "residual".
        branches: an Inception design's branches, each with its widths (its 1x1 reduction's first where kept, its
            output channels last), in the lecture's order.
        width: a residual design's first block's channels (the second block's are twice as many).
        skip: a residual design's skip connection; without it, a plain block of the same two convolutions.
    """

    kind: str
    branches: tuple[tuple[str, tuple[int, ...]], ...] = ()
    width: int = 0
    skip: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DesignError("design.kind", f"unknown block kind {self.kind!r}; choose {' or '.join(KINDS)}",
                              kind=self.kind, valid=", ".join(KINDS))
        if self.kind == "residual":
            _check_width("residual", self.width)
            return
        if not self.branches:
            raise DesignError("design.no_branch", "an Inception design needs at least one branch: choose from "
                              + ", ".join(BRANCHES), valid=", ".join(BRANCHES))
        names = [name for name, _ in self.branches]
        for name, widths in self.branches:
            if name not in BRANCHES:
                raise DesignError("design.branch", f"unknown branch {name!r}; choose from {', '.join(BRANCHES)}",
                                  branch=name, valid=", ".join(BRANCHES))
            if names.count(name) > 1:
                raise DesignError("design.repeated", f"branch {name} is given twice", branch=name)
            taken = _widths_taken(name)
            if len(widths) not in taken:
                shown = " or ".join(str(n) for n in taken)
                raise DesignError("design.widths", f"branch {name} takes {shown} width(s) (a 1x1 reduction's first "
                                  f"where it has one, its output last), got {len(widths)}",
                                  branch=name, count=len(widths), expected=shown)
            for w in widths:
                _check_width(name, w)
        order = list(BRANCHES)
        object.__setattr__(self, "branches", tuple(sorted(self.branches, key=lambda b: order.index(b[0]))))

    @classmethod
    def parse(cls, spec: str) -> "Design":
        """The design a spec names ("inception:1x1=16,5x5=4>24" or "residual:16,noskip"; spaces and case are
        ignored, branches may come in any order)."""
        if not isinstance(spec, str) or len(spec) > MAX_SPEC:
            raise DesignError("design.syntax", f"a design is a text of at most {MAX_SPEC} characters",
                              part=str(spec)[:40])
        text = re.sub(r"\s+", "", spec).lower()
        kind, _, rest = text.partition(":")
        if kind not in KINDS:
            raise DesignError("design.kind", f"unknown block kind {kind!r}; start with {' or '.join(k + ':' for k in KINDS)}",
                              kind=kind, valid=", ".join(KINDS))
        items = rest.split(",")
        if kind == "residual":
            if len(items) != 2 or items[1] not in ("skip", "noskip"):
                raise DesignError("design.skip", f"a residual design is residual:WIDTH,skip or residual:WIDTH,noskip, "
                                  f"not {text!r}", part=text)
            return cls("residual", width=_number("residual", items[0]), skip=items[1] == "skip")
        if not rest:
            return cls("inception")  # refused for having no branch
        branches = []
        for item in items:
            name, eq, widths = item.partition("=")
            if not eq or not name or not widths:
                raise DesignError("design.syntax", f"cannot read {item!r}: write a branch as NAME=WIDTH or "
                                  "NAME=REDUCTION>WIDTH, e.g. 5x5=16>24", part=item)
            if name not in BRANCHES:  # said before anything about its widths
                raise DesignError("design.branch", f"unknown branch {name!r}; choose from {', '.join(BRANCHES)}",
                                  branch=name, valid=", ".join(BRANCHES))
            branches.append((name, tuple(_number(name, w) for w in widths.split(">"))))
        return cls("inception", branches=tuple(branches))

    @property
    def spec(self) -> str:
        """The design as its canonical spec: the branches in the lecture's order, no spaces."""
        if self.kind == "residual":
            return f"residual:{self.width},{'skip' if self.skip else 'noskip'}"
        return "inception:" + ",".join(f"{name}={'>'.join(str(w) for w in widths)}" for name, widths in self.branches)

    def __str__(self) -> str:
        return self.spec


def _number(what: str, text: str) -> int:
    if not text.isdigit() or len(text) > 6:
        raise DesignError("design.width", f"{what}: {text!r} is not a width; choose a whole number from "
                          f"{WIDTHS[0]} to {WIDTHS[1]}", what=what, value=text[:12], low=WIDTHS[0], high=WIDTHS[1])
    return int(text)


def _check_width(what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not WIDTHS[0] <= value <= WIDTHS[1]:
        raise DesignError("design.width", f"{what}: width {value!r} is out of range; choose a whole number from "
                          f"{WIDTHS[0]} to {WIDTHS[1]}", what=what, value=str(value)[:12], low=WIDTHS[0], high=WIDTHS[1])


def design_of(block: str) -> Design:
    """The design a run's config names (its `block`; "" is the default, the lecture's Inception block)."""
    return Design.parse(block or DEFAULT)


def canonical(block: str) -> str:
    """The canonical spec of a run's `block` (the registry's `design` fact: what a run records)."""
    return design_of(block).spec


class DesignedInception(BranchedBlock):
    """The lecture's Inception block with the branches and widths of a design: each branch a chain of convolutions
    (padded to keep the map's size), the pool branch after a 3x3 average pooling; no batch norm and no activation
    inside, as in the lecture. With the lecture's design it is the lecture's block, module for module.

    Args:
        in_channels: channels of the input feature map.
        branches: the design's branches and their widths (Design.branches).
    """

    def __init__(self, in_channels: int, branches: tuple[tuple[str, tuple[int, ...]], ...]) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        described = {}
        for name, widths in branches:
            kernels, attrs, _ = BRANCHES[name]
            kernels, attrs = kernels[-len(widths):], attrs[-len(widths):]  # without its reduction: the last ones
            channels = in_channels
            for kernel, attr, width in zip(kernels, attrs, widths):
                setattr(self, attr, nn.Conv2d(channels, width, kernel_size=kernel, padding=kernel // 2))
                channels = width
            described[name] = (widths[-1], attrs)
        self.describe_branches(described)

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for name in self.branch_names:
            y = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1) if name == "pool" else x
            for attr in self.branch_modules[name]:
                y = getattr(self, attr)(y)
            out.append(y)
        return out  # N x (sum of the branches' widths) x H x W once concatenated


class PlainBlock(nn.Module):
    """The residual block without its skip: relu(conv3x3(relu(conv3x3(x)))), the same convolutions as
    ResidualBlock(channels), so that a design with and one without the skip train the same parameters.

    Args:
        channels: channels in and out.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class DesignedNet(_Net):
    """The lecture's skeleton around a designed block, used twice as the lecture uses its blocks: conv -> block ->
    conv -> block -> linear. The blocks are named as in the lecture's networks (incep1, incep2; rblock1, rblock2;
    block1, block2 for a block without its skip).

    Args:
        in_channels, num_classes, image_size: the data's, as for every registered network.
        design: the block (default: the lecture's Inception block).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 design: Design | None = None) -> None:
        super().__init__(in_channels, num_classes, image_size)
        self.design = design = design or design_of("")
        if design.kind == "inception":  # after 10 and 20 channels, as inception_net's
            self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
            self.incep1 = DesignedInception(10, design.branches)
            self.conv2 = nn.Conv2d(self.incep1.out_channels, 20, kernel_size=5)
            self.incep2 = DesignedInception(20, design.branches)
            self.block_names = ("incep1", "incep2")
        else:  # width, then twice the width, as resnet's 16 and 32
            block, names = (ResidualBlock, ("rblock1", "rblock2")) if design.skip else (PlainBlock, ("block1", "block2"))
            self.conv1 = nn.Conv2d(in_channels, design.width, kernel_size=5)
            setattr(self, names[0], block(design.width))
            self.conv2 = nn.Conv2d(design.width, 2 * design.width, kernel_size=5)
            setattr(self, names[1], block(2 * design.width))
            self.block_names = names
        self._build_head()  # 1408 -> 10 for the lecture's Inception design on 28x28 inputs, 512 for its residual one

    def features(self, x: torch.Tensor) -> torch.Tensor:
        first, second = (getattr(self, name) for name in self.block_names)
        x = F.relu(F.max_pool2d(self.conv1(x), 2))  # N x 10 (or the width) x 12 x 12
        x = first(x)
        x = F.relu(F.max_pool2d(self.conv2(x), 2))  # N x 20 (or twice the width) x 4 x 4
        x = second(x)
        return x


@register_model(epochs=12, design=canonical, family="designed")
def designed(in_channels: int = 1, num_classes: int = 10, image_size: int = 28, block: str = "") -> DesignedNet:
    """The lecture's skeleton with a block of your own design (--block; default: the lecture's Inception block)."""
    return DesignedNet(in_channels, num_classes, image_size, design_of(block))
