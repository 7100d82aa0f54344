"""What a model costs: parameters, and FLOPs counted on the real modules by torch.utils.flop_counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode



def forward_flops(model: nn.Module, in_channels: int = 1, image_size: int = 28) -> int:
    """FLOPs of one forward pass on one image, as torch.utils.flop_counter counts them.

    These are FLOPs, not multiply-adds: a multiply-add counts as 2. The counter covers convolutions
    and matrix products (where nearly all the work is); pooling, ReLU and additions are not counted.
    """
    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_channels, image_size, image_size, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())
