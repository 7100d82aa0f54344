"""What a model costs: parameters, and FLOPs counted on the real modules by torch.utils.flop_counter."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.eager import skip_compiler_import
from cnnlab.models.blocks import BranchedBlock, Inception, ResidualBlock



def _count(model: nn.Module, in_channels: int, image_size: int) -> FlopCounterMode:
    """Run one zero image through `model` in eval mode under a FLOP counter; the model's mode is restored."""
    mode = getattr(flop_counter, "_FlopCounterMode", None)  # the dispatch mode FlopCounterMode enters
    if mode is not None:
        skip_compiler_import(mode.__torch_dispatch__)  # nothing of torch.compile runs here (cnnlab.eager)
    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_channels, image_size, image_size, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return counter


def forward_flops(model: nn.Module, in_channels: int = 1, image_size: int = 28) -> int:
    """FLOPs of one forward pass on one image, as torch.utils.flop_counter counts them.

    These are FLOPs, not multiply-adds: a multiply-add counts as 2. The counter covers convolutions
    and matrix products (where nearly all the work is); pooling, ReLU and additions are not counted.
    """
    return int(_count(model, in_channels, image_size).get_total_flops())


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


def module_flops(model: nn.Module, in_channels: int = 1, image_size: int = 28) -> dict[str, int]:
    """Forward FLOPs of one image per module, keyed by the module's dotted name ('' for the whole model)."""
    counter = _count(model, in_channels, image_size)
    root = type(model).__name__
    out = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        name = key[len(root) + 1 :] if key.startswith(root + ".") else ("" if key == root else key)
        out[name] = int(sum(ops.values()))
    return out


def cost_rows(model: nn.Module, in_channels: int = 1, image_size: int = 28) -> list[CostRow]:
    """The model, each top-level block, and each branch of every top-level Inception-like block: parameters
    and forward FLOPs."""
    flops = module_flops(model, in_channels, image_size)
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    rows = [CostRow(type(model).__name__, "model", params(model), flops.get("", 0))]
    for name, child in model.named_children():
        rows.append(CostRow(name, "block" if isinstance(child, (BranchedBlock, ResidualBlock)) else "layer", params(child), flops.get(name, 0)))
        if isinstance(child, BranchedBlock):
            for branch, members in child.branch_modules.items():
                branch_params = sum(p.numel() for p in child.branch_parameters(branch))
                rows.append(CostRow(f"{name}.{branch}", "branch", branch_params, sum(flops.get(f"{name}.{m}", 0) for m in members)))
    return rows


def conv_flops(conv: nn.Conv2d, in_size: int) -> int:
    """FLOPs of one image through `conv`, counted by running it (not by a formula)."""
    x = torch.zeros(1, conv.in_channels, in_size, in_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        conv(x)
    return int(counter.get_total_flops())


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
            x = torch.zeros(1, c, size, size)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                y = block(x)
            out.append(
                dict(in_channels=c, size=size, variant=variant, out_channels=y.shape[1],
                     parameters=sum(p.numel() for p in block.parameters()), macs=int(counter.get_total_flops()) // 2)
            )
    return out
