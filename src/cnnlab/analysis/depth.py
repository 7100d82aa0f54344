"""Depth: plain stacks against residual stacks of the same width, on a real data set (MNIST by default).

A stack is a stem (3x3 conv, stride 2: 28x28 -> 14x14), then `depth` 3x3 conv layers in blocks of two,
with or without a skip around each block, then a linear classifier on the flattened 14x14 map (no global
pooling, so that the shallowest stack can learn too and depth is the only difference). The
residual block is the lecture's, relu(x + conv(relu(conv(x)))); the plain block is the same without
`+ x`. No batch norm unless asked for. For each depth the sweep measures, on the same batches and from the
same seed: the gradient norm of every conv layer's weights at initialisation and averaged over the first
training steps (recorded by hooks), and the training loss and accuracy after a fixed number of steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnlab.config import Range
from cnnlab.data import ImageSet
from cnnlab.data.tensors.batching import normalize
from cnnlab.eager import eager_optimizer
from cnnlab.train.gradients import GradNormRecorder

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# What a sweep may be asked for. A stack's convolutions hold 9 x width^2 weights each: width 256 and depth 128 make
# about 300 MB of weights, and a wider or deeper stack would take gigabytes for a lecture's point shown at 16 x 32.
DEPTHS = Range(2, 128, whole=True)
WIDTHS = Range(1, 256, whole=True)
STEPS = Range(1, 100_000, whole=True)


class Block(nn.Module):
    """Two 3x3 convolutions; with `residual`, the lecture's skip adds the input back before the last ReLU."""

    def __init__(self, width: int, residual: bool, batch_norm: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=not batch_norm)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(width) if batch_norm else nn.Identity()
        self.bn2 = nn.BatchNorm2d(width) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + identity
        return F.relu(out)


class Stack(nn.Module):
    """Stem, depth/2 blocks, classifier. Args: depth (conv layers in blocks, even), width, residual (skip
    around each block), batch_norm."""

    def __init__(self, depth: int, width: int = 16, residual: bool = False, batch_norm: bool = False) -> None:
        super().__init__()
        if DEPTHS.problem(depth) or depth % 2:
            raise ValueError(f"depth must be an even number from 2 to {DEPTHS.high:g} (blocks of two convs), got {depth}")
        if WIDTHS.problem(width):
            raise ValueError(f"width {WIDTHS.problem(width)}")
        self.stem = nn.Conv2d(1, width, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(*(Block(width, residual, batch_norm) for _ in range(depth // 2)))
        self.fc = nn.Linear(width * 14 * 14, 10)

    def conv_layers(self) -> list[tuple[str, nn.Conv2d]]:
        """The stem and every block conv, input to output."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))  # N x width x 14 x 14
        x = self.blocks(x)
        return self.fc(x.flatten(1))  # no global pooling: a shallow stack must still be able to learn


@dataclass
class DepthResult:
    depth: int
    residual: bool
    grad_init: list[float]  # per conv layer, input to output: weight-gradient norm on the first batch
    grad_early: list[float]  # the same, root-mean-square over the first `early_steps` training steps
    train_loss: float  # mean over the last 20 steps
    train_acc: float  # on a fixed set of training images, after training, in eval mode
    losses: list[float] = field(default_factory=list)  # every step's loss


# The training images on which a trained stack's accuracy is measured (the first ones of the split).
PROBE_IMAGES = 5000


def probe_size(data: ImageSet) -> int:
    """How many training images a trained stack's accuracy is measured on."""
    return min(len(data.train_images), PROBE_IMAGES)


def work(depth: int, steps: int = 200, batch_size: int = 64, probe: int = PROBE_IMAGES, **_) -> int:
    """A stack's run counted in conv layers times images through them, a training step's image three times
    (forward, and backward for the inputs and the weights), the probe's once. Every conv of a stack has the same
    width and map, so this is proportional to its multiply-adds, and the sweep's time follows it (the estimator's
    test, tests/analysis/test_depth.py)."""
    return (depth + 1) * (3 * steps * batch_size + probe)


def run_one(depth: int, residual: bool, data: ImageSet, steps: int = 200, batch_size: int = 64, lr: float = 0.05,
            width: int = 16, batch_norm: bool = False, early_steps: int = 20, seed: int = 0,
            device: torch.device = torch.device("cpu"), done: Callable[[int], object] = lambda w: None) -> DepthResult:
    """Train one stack for `steps` SGD steps (momentum 0.9, constant lr) on the real training images, on `device`;
    `done(w)` is told the `work` of each step and of the probe as it finishes."""
    torch.manual_seed(seed)
    model = Stack(depth, width, residual, batch_norm).to(device)
    convs = model.conv_layers()
    recorder = GradNormRecorder({name: [conv.weight] for name, conv in convs})
    opt = eager_optimizer(torch.optim.SGD)(model.parameters(), lr=lr, momentum=0.9)  # no compiler import: 1.5 s
    gen = torch.Generator().manual_seed(seed)
    n = len(data.train_images)
    losses: list[torch.Tensor] = []
    early: list[torch.Tensor] = []
    grad_init: list[float] = []
    model.train()
    for step in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        x, y = normalize(data.train_images[idx].to(device), data.mean, data.std), data.train_labels[idx].to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        recorder.step()
        if step == 0:
            grad_init = [math.sqrt(v) for v in recorder.last.values()]
        if step < early_steps:
            early.append(recorder.last_vector())
        opt.step()
        losses.append(loss.detach())
        done((depth + 1) * 3 * batch_size)
    model.eval()
    with torch.no_grad():
        probe = torch.arange(0, probe_size(data))
        logits = model(normalize(data.train_images[probe].to(device), data.mean, data.std))
        acc = (logits.argmax(1) == data.train_labels[probe].to(device)).float().mean().item()
    done((depth + 1) * len(probe))
    recorder.close()
    losses_f = torch.stack(losses).tolist()
    tail = losses_f[-20:]
    grad_early = torch.stack(early).mean(0).sqrt().tolist()
    return DepthResult(depth, residual, grad_init, grad_early, sum(tail) / len(tail), acc, losses_f)


def sweep(data: ImageSet, depths=(2, 4, 8, 16, 32), progress: bool = True,
          done: Callable[[int], object] = lambda w: None, **kw) -> list[DepthResult]:
    """A plain and a residual stack of every depth, trained in turn. The bar counts `work`, so its time left is
    the work left at the rate so far (a deep stack's step takes longer than a shallow one's); `done` is told
    each piece of work too."""
    results = []
    jobs = [(d, r) for d in depths for r in (False, True)]
    total = sum(work(d, probe=probe_size(data), **kw) for d, _ in jobs)
    # smoothing=0: the rate over the whole sweep, not the last few updates (a probe's update lumps its work)
    # disable=None: a bar on a terminal only; in a log its carriage returns would only fill it
    with tqdm(total=total, desc="depth sweep", disable=None if progress else True, smoothing=0, dynamic_ncols=True,
              bar_format="{l_bar}{bar}| [{elapsed}<{remaining}{postfix}]") as bar:
        def step(w: int) -> None:
            bar.update(w)
            done(w)

        for d, r in jobs:
            bar.set_postfix_str(f"depth {d} {'residual' if r else 'plain'}", refresh=False)
            results.append(run_one(d, r, data, done=step, **kw))
    return results


def plot_depth(results: list[DepthResult], path_grads: str | Path | None, path_train: str | Path | None,
               note: str = "") -> tuple[Figure, Figure]:
    """Two figures: weight-gradient norm per layer at initialisation (log scale), and the first layer's
    gradient norm and the training accuracy against depth; returned, and written to the paths not None."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # not pyplot's: nothing to close or leak, no backend switched (rundir.plot_curves)

    depths = sorted({r.depth for r in results})
    cmap = colormaps["viridis"]
    fig = grads = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, residual in zip(axes, (False, True)):
        for i, d in enumerate(depths):
            r = next(r for r in results if r.depth == d and r.residual == residual)
            ax.plot(range(len(r.grad_init)), r.grad_init, marker=".", color=cmap(i / max(1, len(depths) - 1)), label=f"depth {d}")
        ax.set_yscale("log")
        ax.set_xlabel("conv layer (0 = stem, input side)")
        ax.set_title(("residual" if residual else "plain") + " stack: gradient at initialisation")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("weight-gradient norm (first batch, log scale)")
    fig.suptitle("Gradient norm per layer" + (f" ({note})" if note else ""))
    fig.tight_layout()
    if path_grads is not None:
        from cnnlab.plotting import save_figure  # matplotlib is imported only where a figure is made

        save_figure(fig, path_grads)

    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    for residual, style in ((False, "o--"), (True, "s-")):
        rs = [next(r for r in results if r.depth == d and r.residual == residual) for d in depths]
        label = "residual" if residual else "plain"
        axes[0].plot(depths, [r.grad_init[0] for r in rs], style, label=label)
        axes[1].plot(depths, [100 * r.train_acc for r in rs], style, label=label)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("stem's weight-gradient norm at init (log scale)")
    axes[0].set_title("Gradient reaching the first layer")
    axes[1].set_ylabel("training accuracy after the budget (%)")
    axes[1].set_ylim(0, 100)
    axes[1].set_title("Training accuracy after a fixed number of steps")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.set_xlabel("depth (3x3 conv layers in blocks)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Plain against residual stacks of the same width" + (f" ({note})" if note else ""))
    fig.tight_layout()
    if path_train is not None:
        from cnnlab.plotting import save_figure

        save_figure(fig, path_train)
    return grads, fig
