"""What a network costs to run, counted on its real modules: forward FLOPs by PyTorch's own counter
(torch.utils.flop_counter), for the whole network and for each module.

The counting lives beside the networks so that every room above reads one count: the cost tables of the analysis,
`cnnlab models`, and the page's block designer (cnnlab.serve.design). A multiply-add is two FLOPs; the counter
covers convolutions and matrix products (where nearly all the work is), not pooling, ReLU or sums.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.eager import skip_compiler_import


def _counter() -> FlopCounterMode:
    mode = getattr(flop_counter, "_FlopCounterMode", None)  # the dispatch mode FlopCounterMode enters
    if mode is not None:
        skip_compiler_import(mode.__torch_dispatch__)  # nothing of torch.compile runs here (cnnlab.eager)
    return FlopCounterMode(display=False)


def module_flops(model: nn.Module, in_channels: int = 1, image_size: int = 28) -> dict[str, int]:
    """Forward FLOPs of one zero image per module of `model`, by dotted name ('' for the whole model), counted in
    eval mode (the model's mode is restored).

    Each module's FLOPs are the counter's total after its forward less the total before it. The counter's own table
    by module is not read: it follows modules through hooks on every module of the process, so a model that another
    thread runs meanwhile (a served one) would enter it; the total is the calling thread's alone."""
    counter = _counter()
    names = {module: name for name, module in model.named_modules()}
    before: dict[nn.Module, int] = {}
    flops: dict[str, int] = {}

    def enter(module, args) -> None:
        before[module] = counter.get_total_flops()

    def leave(module, args, out) -> None:
        name = names[module]  # a module run twice counts twice
        flops[name] = flops.get(name, 0) + counter.get_total_flops() - before[module]

    handles = [h for m in names for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    was_training = model.training
    x = torch.zeros(1, in_channels, image_size, image_size, device=next(model.parameters()).device)
    try:
        model.eval()
        with counter, torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: int(v) for name, v in flops.items()}


def forward_flops(model: nn.Module, in_channels: int = 1, image_size: int = 28) -> int:
    """FLOPs of one forward pass on one image, as torch.utils.flop_counter counts them (a multiply-add is 2)."""
    return module_flops(model, in_channels, image_size)[""]


def conv_flops(conv: nn.Conv2d, in_size: int) -> int:
    """FLOPs of one image through `conv`, counted by running it (not by a formula)."""
    x = torch.zeros(1, conv.in_channels, in_size, in_size)
    with _counter() as counter, torch.no_grad():
        conv(x)
    return int(counter.get_total_flops())
