"""What a model costs, as tables: parameters and forward FLOPs of the model, its blocks and each Inception branch
(counted by cnnlab.models.cost), and the lecture's 1x1 saving on real layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.models.blocks import BranchedBlock, Inception, ResidualBlock
from cnnlab.models.cost import conv_flops, forward_flops, module_flops

__all__ = ["CostRow", "conv_flops", "cost_rows", "forward_flops", "inception_reduction_costs", "lecture_1x1_example",
           "module_flops"]


@dataclass
class CostRow:
    """One row of a cost table: a module (or group of modules) and what it costs per image, forward."""

    name: str
    kind: str  # "model", "block", "branch" or "layer"
    parameters: int
    flops: int  # torch.utils.flop_counter FLOPs (a multiply-add is 2)

    @property
    def macs(self) -> int:
        return self.flops // 2


def cost_rows(model: nn.Module, in_channels: int = 1, image_size: int = 28) -> list[CostRow]:
    """The model, each top-level module, and each Inception-like block (at any depth: a dense layer inside a dense
    block too) with each of its branches: parameters and forward FLOPs."""
    flops = module_flops(model, in_channels, image_size)
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    rows = [CostRow(type(model).__name__, "model", params(model), flops.get("", 0))]
    for name, child in model.named_children():
        rows.append(CostRow(name, "block" if isinstance(child, (BranchedBlock, ResidualBlock)) else "layer", params(child), flops.get(name, 0)))
        for sub, block in child.named_modules(prefix=name):
            if not isinstance(block, BranchedBlock):
                continue
            if sub != name:  # a block inside a top-level module (a dense block's layers)
                rows.append(CostRow(sub, "block", params(block), flops.get(sub, 0)))
            for branch, members in block.branch_modules.items():
                branch_params = sum(p.numel() for p in block.branch_parameters(branch))
                rows.append(CostRow(f"{sub}.{branch}", "branch", branch_params, sum(flops.get(f"{sub}.{m}", 0) for m in members)))
    return rows


def lecture_1x1_example() -> dict[str, int]:
    """The lecture's example, on real layers: 192 channels of 28x28 to 32 with a 5x5 kernel, directly and
    through a 16-channel 1x1 convolution first. Multiplications (= multiply-adds), bias excluded."""
    direct = nn.Conv2d(192, 32, 5, padding=2, bias=False)
    reduce, then = nn.Conv2d(192, 16, 1, bias=False), nn.Conv2d(16, 32, 5, padding=2, bias=False)
    return {
        "direct": conv_flops(direct, 28) // 2,
        "with_1x1": (conv_flops(reduce, 28) + conv_flops(then, 28)) // 2,
    }


class InceptionWithoutReductions(nn.Module):
    """The lecture's Inception block with its 1x1 reductions taken out, for the cost comparison only: the
    5x5 and 3x3 branches convolve the input directly, every branch keeps its output channels (16, 24, 24,
    24). The 1x1 branch and the pool branch's 1x1 are branches of their own, not reductions, so they stay."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5 = nn.Conv2d(in_channels, 24, kernel_size=5, padding=2)
        self.branch3x3_a = nn.Conv2d(in_channels, 24, kernel_size=3, padding=1)
        self.branch3x3_b = nn.Conv2d(24, 24, kernel_size=3, padding=1)
        self.branch_pool = nn.Conv2d(in_channels, 24, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bp = self.branch_pool(torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), self.branch5x5(x), self.branch3x3_b(self.branch3x3_a(x)), bp], 1)


def inception_reduction_costs(cases: tuple[tuple[int, int], ...] = ((10, 12), (20, 4), (192, 28))) -> list[dict]:
    """The Inception block with and without its 1x1 reductions, for (in_channels, size) cases: the two
    places it sits in `inception_net` (10 channels at 12x12, 20 at 4x4) and GoogLeNet's (192 at 28x28)."""
    out = []
    for c, size in cases:
        for variant, block in (("with 1x1 reductions", Inception(c)), ("without", InceptionWithoutReductions(c))):
            with torch.no_grad():
                y = block(torch.zeros(1, c, size, size))
            out.append(
                dict(in_channels=c, size=size, variant=variant, out_channels=y.shape[1],
                     parameters=sum(p.numel() for p in block.parameters()), macs=module_flops(block, c, size)[""] // 2)
            )
    return out
