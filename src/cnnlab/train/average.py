"""An exponential moving average of a network's weights (--ema), kept beside the network the optimiser trains.

After every optimiser step the average moves towards the trained weights: avg += (1 - d) * (w - avg). Its decay d
is warmed up, d = min(decay, (1 + n) / (10 + n)) after n steps, so that early on it follows the weights closely
and later averages over roughly the last tenth of the run, until `decay` caps it. Batch norm's running statistics
are averaged the same way; integer buffers (batch norm's step count) are copied.

The count n is the run's step count, kept on the host: a resumed run continues the average exactly, and a step on a
GPU waits for nothing. torch.optim.swa_utils.AveragedModel does the same averaging, but keeps its count in a tensor
(read back on every step to warm the decay up) and renames every weight under `module.`; checkpoints here store the
average under the network's own names, so that whatever loads a trained model loads the average.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """The average of `model`'s weights; `self.model` is a network of the same shape holding it (in eval mode,
    without gradients)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay <= 1:
            raise ValueError(f"the average's decay must be above 0 and at most 1, got {decay}")
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).requires_grad_(False).eval()
        # The pairs of tensors an update touches (the copy has the model's names): floats averaged, others copied.
        mine, theirs = self.model.state_dict(), model.state_dict()
        floats = [k for k, t in mine.items() if t.is_floating_point()]
        self._floats = ([mine[k] for k in floats], [theirs[k] for k in floats])
        self._others = [(mine[k], theirs[k]) for k in mine if not mine[k].is_floating_point()]

    def current_decay(self) -> float:
        """The decay the next update takes."""
        n = self.updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        """One step: move the average towards the model's weights as they are now."""
        weight = 1.0 - self.current_decay()
        self.updates += 1
        torch._foreach_lerp_(self._floats[0], self._floats[1], weight)
        for mine, theirs in self._others:
            mine.copy_(theirs)
