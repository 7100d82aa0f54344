"""The lecture's building blocks: the Inception block and the residual block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Inception(nn.Module):
    """The lecture's Inception block: four branches side by side, concatenated on the channel axis.

    Branch order (and output channels): 1x1 (16) ; 1x1 -> 5x5 (24) ; 1x1 -> 3x3 -> 3x3 (24) ;
    3x3 average pool -> 1x1 (24). 88 channels out, spatial size unchanged. No batch norm and no
    activation inside, exactly as in the lecture.

    Args:
        in_channels: channels of the input feature map.
    """

    BRANCH_NAMES = ("1x1", "5x5", "3x3dbl", "pool")
    BRANCH_CHANNELS = (16, 24, 24, 24)  # output channels of each branch, in concatenation order
    # The modules of each branch, by attribute name, so that analysis can weigh or silence a branch.
    BRANCH_MODULES = {
        "1x1": ("branch1x1",),
        "5x5": ("branch5x5_1", "branch5x5_2"),
        "3x3dbl": ("branch3x3_1", "branch3x3_2", "branch3x3_3"),
        "pool": ("branch_pool",),
    }

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

    @property
    def out_channels(self) -> int:
        return sum(self.BRANCH_CHANNELS)

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four branch outputs, in concatenation order (kept apart so analysis can weigh each one)."""
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3_3(self.branch3x3_2(self.branch3x3_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return [b1, b5, b3, bp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.branches(x), dim=1)  # N x 88 x H x W


class ResidualBlock(nn.Module):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = F.relu(self.conv1(x))
        out = self.conv2(out)
        out = out + identity  # the gradient flows through this sum unchanged
        return F.relu(out)
