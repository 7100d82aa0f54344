"""The lecture's building blocks: the Inception block and the residual block, the branch interface that every
Inception-like block shares, and the skip interface that every residual block shares."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.registry import create_model, list_models


class BranchedBlock(nn.Module):
    """A block of parallel branches whose outputs are concatenated on the channel axis (an Inception block).

    Subclasses build their branches' modules, then call `describe_branches`, and implement `branches(x)`;
    `forward` only concatenates. Analysis (ablation, energy, gradient and cost per branch) reads the
    description and hooks the real block, so it works for any subclass without knowing its layers.
    """

    TITLE = "inception"  # what the inside view calls it (kind.<TITLE> on the page; a dense layer is one too)
    branch_names: tuple[str, ...]
    branch_channels: tuple[int, ...]  # output channels of each branch, in concatenation order
    branch_modules: dict[str, tuple[str, ...]]  # branch -> attribute names of its modules

    def describe_branches(self, branches: dict[str, tuple[int, tuple[str, ...]]]) -> None:
        """Record the branches, in concatenation order: name -> (output channels, attribute names of its modules).

        Every parameter of the block must belong to exactly one branch, so that per-branch sums add up to the block.
        """
        for name, (channels, members) in branches.items():
            if channels < 1:
                raise ValueError(f"branch {name!r} must output >= 1 channel, got {channels}")
            missing = [m for m in members if not isinstance(getattr(self, m, None), nn.Module)]
            if not members or missing:
                raise ValueError(f"branch {name!r} names no module {missing[0] if missing else ''}".rstrip())
        self.branch_names = tuple(branches)
        self.branch_channels = tuple(channels for channels, _ in branches.values())
        self.branch_modules = {name: tuple(members) for name, (_, members) in branches.items()}
        owned = [id(p) for members in self.branch_modules.values() for m in members for p in getattr(self, m).parameters()]
        if sorted(owned) != sorted(id(p) for p in self.parameters()):
            raise ValueError("every parameter of the block must belong to exactly one branch")

    @property
    def out_channels(self) -> int:
        return sum(self.branch_channels)

    def branch_slices(self) -> dict[str, slice]:
        """Branch -> its channels of the block's output."""
        out, start = {}, 0
        for name, channels in zip(self.branch_names, self.branch_channels):
            out[name] = slice(start, start + channels)
            start += channels
        return out

    def branch_parameters(self, branch: str) -> list[nn.Parameter]:
        return [p for m in self.branch_modules[branch] for p in getattr(self, m).parameters()]

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The branch outputs, in `branch_names` order."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.branches(x), dim=1)


def branched_blocks(model: nn.Module) -> dict[str, BranchedBlock]:
    """Every Inception-like block of `model`, by its dotted module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, BranchedBlock)}


def models_with_branches() -> list[str]:
    """The registered models that contain Inception-like blocks, in registration order."""
    return [name for name in list_models() if branched_blocks(create_model(name))]


class Inception(BranchedBlock):
    """The lecture's Inception block: four branches side by side, concatenated on the channel axis.

    Branch order (and output channels): 1x1 (16) ; 1x1 -> 5x5 (24) ; 1x1 -> 3x3 -> 3x3 (24) ;
    3x3 average pool -> 1x1 (24). 88 channels out, spatial size unchanged. No batch norm and no
    activation inside, exactly as in the lecture.

    Args:
        in_channels: channels of the input feature map.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        self.branch1x1 = nn.Conv2d(in_channels, 16, kernel_size=1)

        self.branch5x5_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        # The notes write kernel_size=1 with padding=2 here: that turns a 12x12 map into 16x16, which
        # cannot be concatenated with the other branches. The lecture means kernel_size=5.
        self.branch5x5_2 = nn.Conv2d(16, 24, kernel_size=5, padding=2)

        self.branch3x3_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch3x3_2 = nn.Conv2d(16, 24, kernel_size=3, padding=1)
        self.branch3x3_3 = nn.Conv2d(24, 24, kernel_size=3, padding=1)

        self.branch_pool = nn.Conv2d(in_channels, 24, kernel_size=1)
        self.describe_branches({
            "1x1": (16, ("branch1x1",)),
            "5x5": (24, ("branch5x5_1", "branch5x5_2")),
            "3x3dbl": (24, ("branch3x3_1", "branch3x3_2", "branch3x3_3")),
            "pool": (24, ("branch_pool",)),
        })

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four branch outputs, in concatenation order (kept apart so analysis can weigh each one)."""
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3_3(self.branch3x3_2(self.branch3x3_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return [b1, b5, b3, bp]  # N x (16 + 24 + 24 + 24 = 88) x H x W once concatenated


class SkipBlock(nn.Module):
    """A residual block: after(skip(x) + F(x)), a skip path and a conv path added, then `after` (a ReLU in the
    lecture's block and ResNet's; nothing in a pre-activation unit, whose output is the sum itself).

    Subclasses implement `paths(x) -> (skip, conv)` and, where the sum is not rectified, `after`; `forward` only adds
    and applies `after`. Analysis (the inside view, switching the skip or the conv path off) calls `paths` and `after`
    on the real block, so it works for any subclass without knowing its layers (as `BranchedBlock.branches` does for
    Inception blocks).
    """

    TITLE = "residual"  # what the inside view calls it

    def paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(skip, conv): the skip path's output (x itself, or a projection, a scaling or a gating of it) and the conv
        path's F(x) (scaled or gated where the unit does)."""
        raise NotImplementedError

    def after(self, y: torch.Tensor) -> torch.Tensor:
        """What follows the sum: a ReLU here."""
        return F.relu(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity, out = self.paths(x)
        out = out + identity  # the gradient flows through this sum unchanged
        return self.after(out)


def residual_blocks(model: nn.Module) -> dict[str, SkipBlock]:
    """Every residual block of `model`, by its dotted module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SkipBlock)}


class ResidualBlock(SkipBlock):
    """The lecture's residual block: relu(x + conv3x3(relu(conv3x3(x)))), channels and size unchanged.

    Args:
        channels: channels in and out (the skip is an identity, so they must match).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        identity = x
        out = self.conv2(F.relu(self.conv1(x)))
        return identity, out  # forward: relu(out + identity)
