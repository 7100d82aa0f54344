"""Gradient norms of groups of parameters, recorded by hooks during backward passes, without host syncs."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.train.loop import StepHook


class GradNormRecorder(StepHook):
    """Squared gradient norms of named groups of parameters, from hooks on the parameters themselves.

    Each hook receives the gradient autograd computes for its parameter in a backward pass and adds its
    squared norm to the group's running total (on the parameters' device: no host sync). `step()` closes a
    backward pass: it moves the totals into per-group sums and counts the step. `last` holds the squared
    norms of the last closed step, `mean()` the means over all closed steps.

    Args:
        groups: group name -> parameters (e.g. the parameters of one Inception branch, or of one layer).
    """

    def __init__(self, groups: dict[str, list[nn.Parameter]]) -> None:
        if not groups:
            raise ValueError("no parameter groups to record")
        device = next(p for ps in groups.values() for p in ps).device
        self.names = list(groups)
        self._current = torch.zeros(len(self.names), device=device)
        self._sum = torch.zeros(len(self.names), device=device)
        self._last = torch.zeros(len(self.names), device=device)
        self.steps = 0
        self._handles = []
        for i, params in enumerate(groups.values()):
            for p in params:
                self._handles.append(p.register_hook(lambda grad, i=i: self._add(i, grad)))

    def _add(self, i: int, grad: torch.Tensor) -> None:
        self._current[i] += grad.detach().float().pow(2).sum()

    def after_backward(self) -> None:  # the run's step hook
        self.step()

    def step(self) -> None:
        self._last.copy_(self._current)
        self._sum += self._current
        self._current.zero_()
        self.steps += 1

    @property
    def last(self) -> dict[str, float]:
        """Squared norms of the last closed step (one host sync)."""
        return dict(zip(self.names, self._last.tolist()))

    def last_vector(self) -> torch.Tensor:
        """Squared norms of the last closed step as a tensor in group order (no host sync)."""
        return self._last.clone()

    def mean(self) -> dict[str, float]:
        """Mean squared norm per group over the closed steps (one host sync)."""
        return dict(zip(self.names, (self._sum / max(1, self.steps)).tolist()))

    def reset(self) -> None:
        self._sum.zero_()
        self.steps = 0

    def state(self) -> dict[str, object]:
        """The sums of the epoch so far, for a checkpoint written within it."""
        return {"sum": self._sum.cpu().clone(), "steps": self.steps}

    def load_state(self, state: dict[str, object]) -> None:
        self._sum.copy_(state["sum"])
        self.steps = int(state["steps"])

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def inception_branch_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """'<block>.<branch>' -> that branch's parameters, for every Inception-like block of `model`."""
    from cnnlab.models.blocks import branched_blocks

    return {
        f"{name}.{branch}": block.branch_parameters(branch)
        for name, block in branched_blocks(model).items()
        for branch in block.branch_names
    }
