"""Which Inception branches does a trained network lean on? Measured on the real model, through hooks.

For every Inception block and branch of a trained model that has them (`inception_net`, `inception_bn`: any
model whose blocks implement `cnnlab.models.BranchedBlock`):
- ablation: test accuracy with that branch's output zeroed, and with only that branch kept (the others
  zeroed), done by a forward hook that zeroes the branch's channels of the block's concatenated output;
- energy: the branch's share of the block's output energy (sum of squares) on test images;
- gradient: its share of the block's squared gradient norm over training, when the run recorded it
  (`cnnlab train --record-branch-grads` writes branch_grads.json).
Several checkpoints (seeds) give a mean and a spread, so the answer says whether it is stable.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.data import ImageSet
from cnnlab.models.blocks import BranchedBlock, branched_blocks
from cnnlab.models.switches import switched_off
from cnnlab.runs.checkpoint import checkpoint_dir
from cnnlab.runs.forward import evaluate, predict_logits
from cnnlab.runs.trained import load

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@contextlib.contextmanager
def silenced(model: nn.Module, branches: dict[str, set[str]]):
    """Within the context, the named branches of the named blocks output zeros: {block: {branch, ...}} (in this thread:
    the switches of the inside view, `cnnlab.models.switches.switched_off`)."""
    blocks = branched_blocks(model)
    for block_name, names in branches.items():
        block = blocks[block_name]
        unknown = set(names) - set(block.branch_names)
        if unknown:
            raise ValueError(f"unknown branch {sorted(unknown)[0]!r}; choose from {', '.join(block.branch_names)}")
    with switched_off(model, [f"{block}.{name}" for block, names in branches.items() for name in names]):
        yield model


@torch.no_grad()
def branch_energy(model: nn.Module, images: torch.Tensor, cfg: TrainConfig) -> dict[str, float]:
    """'<block>.<branch>' -> that branch's share of its block's output energy over `images`."""
    blocks = branched_blocks(model)
    sums: dict[str, torch.Tensor] = {}

    def make_hook(block_name: str, block: BranchedBlock):
        def hook(module, inputs, output):
            for name, s in block.branch_slices().items():
                key = f"{block_name}.{name}"
                sums[key] = sums.get(key, 0) + output[:, s].float().pow(2).sum()

        return hook

    handles = [b.register_forward_hook(make_hook(n, b)) for n, b in blocks.items()]
    try:
        predict_logits(model, images, cfg)
    finally:
        for h in handles:
            h.remove()
    shares = {}
    for block_name, block in blocks.items():
        total = sum(float(sums[f"{block_name}.{n}"]) for n in block.branch_names)
        for n in block.branch_names:
            shares[f"{block_name}.{n}"] = float(sums[f"{block_name}.{n}"]) / total if total else float("nan")
    return shares


def gradient_shares(run_dir: Path) -> dict[str, float] | None:
    """'<block>.<branch>' -> share of its block's squared gradient norm, averaged over all recorded epochs
    (weighted by steps); None when the run did not record branch gradients."""
    path = run_dir / "branch_grads.json"
    if not path.exists():
        return None
    from cnnlab.runs.rundir import read_run_file

    epochs = json.loads(read_run_file(path))["epochs"]
    totals: dict[str, float] = {}
    for e in epochs:
        for k, v in e["mean_squared_norm"].items():
            totals[k] = totals.get(k, 0.0) + v * e["steps"]
    shares = {}
    for key, v in totals.items():
        block = key.rsplit(".", 1)[0]
        block_total = sum(t for k, t in totals.items() if k.rsplit(".", 1)[0] == block)
        shares[key] = v / block_total if block_total else float("nan")
    return shares


@dataclass
class BranchReport:
    checkpoint: str
    model: str
    seed: int | None
    accuracy: float
    rows: list[dict] = field(default_factory=list)  # one per block and branch


def analyze_checkpoint(checkpoint: str | Path, data: ImageSet, device: str = "auto") -> BranchReport:
    """Ablation accuracies, energy shares and (if recorded) gradient shares for one trained model."""
    trained = load(checkpoint, device)
    model, cfg = trained.network, trained.config
    blocks = branched_blocks(model)
    if not blocks:
        raise ValueError(f"{checkpoint}: model {cfg.model!r} has no Inception blocks to analyse")
    dev = next(model.parameters()).device
    x, y = data.test_images.to(dev), data.test_labels.to(dev)
    _, base = evaluate(model, x, y, cfg)
    energy = branch_energy(model, x, cfg)
    grads = gradient_shares(checkpoint_dir(checkpoint))
    report = BranchReport(str(checkpoint), cfg.model, cfg.seed, base)
    for block_name, block in blocks.items():
        for branch in block.branch_names:
            with silenced(model, {block_name: {branch}}):
                _, without = evaluate(model, x, y, cfg)
            with silenced(model, {block_name: set(block.branch_names) - {branch}}):
                _, only = evaluate(model, x, y, cfg)
            key = f"{block_name}.{branch}"
            report.rows.append(
                dict(block=block_name, branch=branch, acc_without=without, acc_only=only,
                     energy_share=energy[key], grad_share=None if grads is None else grads.get(key))
            )
    return report


def summarise(reports: list[BranchReport]) -> list[dict]:
    """Per block and branch: the mean and the min..max over the checkpoints of every measure."""
    models = list(dict.fromkeys(r.model for r in reports))
    if len(models) > 1:  # their blocks and branches differ, so there is nothing to average
        raise ValueError(f"the checkpoints are of different models ({', '.join(models)}); analyse one model's seeds at a time")
    keys = [(r["block"], r["branch"]) for r in reports[0].rows]
    out = []
    for block, branch in keys:
        rows = [next(r for r in rep.rows if (r["block"], r["branch"]) == (block, branch)) for rep in reports]
        entry = {"block": block, "branch": branch}
        for m in ("acc_without", "acc_only", "energy_share", "grad_share"):
            vals = [r[m] for r in rows if r[m] is not None and not math.isnan(r[m])]
            entry[m] = (sum(vals) / len(vals), min(vals), max(vals)) if vals else None
        out.append(entry)
    return out


def answer(reports: list[BranchReport], summary: list[dict]) -> str:
    """The notes' question, answered in plain words from the measurements."""
    lines = []
    base = sum(r.accuracy for r in reports) / len(reports)
    for block in dict.fromkeys(e["block"] for e in summary):
        entries = [e for e in summary if e["block"] == block]
        by_drop = sorted(entries, key=lambda e: e["acc_without"][0])
        most = by_drop[0]
        least = by_drop[-1]
        by_only = max(entries, key=lambda e: e["acc_only"][0])
        energy = max(entries, key=lambda e: e["energy_share"][0])
        text = (
            f"In `{block}`, silencing the {most['branch']} branch costs the most accuracy "
            f"({100 * base:.2f}% -> {100 * most['acc_without'][0]:.2f}%), silencing the {least['branch']} branch the least "
            f"({100 * least['acc_without'][0]:.2f}%); kept alone, the {by_only['branch']} branch does best "
            f"({100 * by_only['acc_only'][0]:.2f}%). The {energy['branch']} branch carries the largest share of the "
            f"block's output energy ({100 * energy['energy_share'][0]:.0f}%)."
        )
        grads = [e for e in entries if e["grad_share"] is not None]
        if grads:
            g = max(grads, key=lambda e: e["grad_share"][0])
            text += f" Over training, the {g['branch']} branch received the largest share of the gradient ({100 * g['grad_share'][0]:.0f}%)."
        lines.append(text)
    if len(reports) > 1:
        stable = []
        for block in dict.fromkeys(e["block"] for e in summary):
            orders = []
            for rep in reports:
                rows = [r for r in rep.rows if r["block"] == block]
                orders.append(min(rows, key=lambda r: r["acc_without"])["branch"])
            stable.append(f"`{block}`: the most needed branch is {', '.join(orders)} across the {len(reports)} seeds"
                          + (" (stable)" if len(set(orders)) == 1 else " (not stable)"))
        lines.append("Across seeds: " + "; ".join(stable) + ".")
    lines.append(
        "Training does not switch branches on or off: every branch keeps weight, and the network is built so that "
        "all four feed the next layer. What the measurements show is how much each one matters to the result."
    )
    return "\n\n".join(lines)


def plot_branches(summary: list[dict], path: str | Path | None, title: str = "") -> Figure:
    """Per block: accuracy without each branch and with it alone, and its energy and gradient shares: the Figure,
    also written to `path` unless it is None."""
    from matplotlib.figure import Figure  # not pyplot's: nothing to close or leak, no backend switched (rundir.plot_curves)

    blocks = list(dict.fromkeys(e["block"] for e in summary))
    fig = Figure(figsize=(5.5 * len(blocks), 7.5))
    axes = fig.subplots(2, len(blocks), squeeze=False)
    for j, block in enumerate(blocks):
        entries = [e for e in summary if e["block"] == block]
        names = [e["branch"] for e in entries]
        pos = range(len(names))
        ax = axes[0][j]
        for off, key, label in ((-0.2, "acc_without", "that branch zeroed"), (0.2, "acc_only", "only that branch kept")):
            mean = [100 * e[key][0] for e in entries]
            err = [[100 * (e[key][0] - e[key][1]) for e in entries], [100 * (e[key][2] - e[key][0]) for e in entries]]
            ax.bar([p + off for p in pos], mean, width=0.4, yerr=err, capsize=3, label=label)
        ax.set_xticks(list(pos), names)
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 118)
        ax.set_yticks(range(0, 101, 20))
        ax.set_title(f"{block}: test accuracy with branches silenced")
        ax.legend(loc="upper center", ncol=2, fontsize=8)
        ax = axes[1][j]
        has_grad = all(e["grad_share"] is not None for e in entries)
        ax.bar([p - 0.2 for p in pos], [100 * e["energy_share"][0] for e in entries], width=0.4, label="output energy")
        if has_grad:
            ax.bar([p + 0.2 for p in pos], [100 * e["grad_share"][0] for e in entries], width=0.4, label="gradient (training)")
        ax.set_xticks(list(pos), names)
        ax.set_ylabel("share of the block (%)")
        ax.set_title(f"{block}: each branch's share")
        ax.legend(fontsize=8)
    fig.suptitle(title or "Inception branches")
    fig.tight_layout()
    if path is not None:
        from cnnlab.plotting import save_figure  # matplotlib is imported only where a figure is made

        save_figure(fig, path)
    return fig
