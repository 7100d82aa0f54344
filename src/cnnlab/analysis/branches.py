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
from typing import TYPE_CHECKING, Callable

import torch
from torch import fx, nn

from cnnlab.config import TrainConfig
from cnnlab.data import ImageSet
from cnnlab.models.blocks import BranchedBlock, branched_blocks
from cnnlab.models.switches import switched_off, thread_hooks
from cnnlab.runs.checkpoint import checkpoint_dir
from cnnlab.device import autocast, autocast_dtype
from cnnlab.runs.forward import model_input, predict_logits
from cnnlab.runs.trained import TrainedModel, load

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


def _energy_hooks(blocks: dict[str, BranchedBlock], sums: dict[str, torch.Tensor]):
    """Forward hooks that add each branch's sum of squares of its block's output to sums['<block>.<branch>']."""

    def make_hook(block_name: str, block: BranchedBlock):
        def hook(module, inputs, output):
            for name, s in block.branch_slices().items():
                key = f"{block_name}.{name}"
                sums[key] = sums.get(key, 0) + output[:, s].float().pow(2).sum()

        return hook

    return [(b, make_hook(n, b)) for n, b in blocks.items()]


def _shares(blocks: dict[str, BranchedBlock], sums: dict[str, torch.Tensor]) -> dict[str, float]:
    shares = {}
    for block_name, block in blocks.items():
        total = sum(float(sums[f"{block_name}.{n}"]) for n in block.branch_names)
        for n in block.branch_names:
            shares[f"{block_name}.{n}"] = float(sums[f"{block_name}.{n}"]) / total if total else float("nan")
    return shares


@torch.no_grad()
def branch_energy(model: nn.Module, images: torch.Tensor, cfg: TrainConfig) -> dict[str, float]:
    """'<block>.<branch>' -> that branch's share of its block's output energy over `images`."""
    blocks = branched_blocks(model)
    sums: dict[str, torch.Tensor] = {}
    with thread_hooks(_energy_hooks(blocks, sums)):
        predict_logits(model, images, cfg)
    return _shares(blocks, sums)


class _BlockTracer(fx.Tracer):
    """Traces a network with its Inception-like blocks kept whole: one node each, whose output can be replaced."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, BranchedBlock) or super().is_leaf_module(m, qualname)


class _Keeping(fx.Interpreter):
    """Runs the graph and keeps the values of the nodes in `keep` (in `kept`)."""

    def __init__(self, module: fx.GraphModule, keep: set[fx.Node]) -> None:
        super().__init__(module)
        self.keep, self.kept = keep, {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n in self.keep:
            self.kept[n] = out.clone()  # as computed: a later in-place op (a ReLU) must not change it
        return out


class _Resumable:
    """The network as a torch.fx graph that can run again from any block's output: silencing a branch only zeroes
    its channels of its block's output, so everything before the block is the same as in the unsilenced forward
    and need not run again. The same modules, called in the same order on the same tensors as `model.forward`,
    so every value is the one the whole forward gives."""

    def __init__(self, model: nn.Module, blocks: dict[str, BranchedBlock]) -> None:
        graph = _BlockTracer().trace(model)
        self.module = fx.GraphModule(model, graph)  # holds the model's own modules, not copies
        calls = [n for n in graph.nodes if n.op == "call_module"]
        self.node: dict[str, fx.Node] = {}  # block name -> its one node (a block called twice is left out)
        for name in blocks:
            found = [n for n in calls if n.target == name]
            if len(found) == 1:
                self.node[name] = found[0]
        self.before: dict[str, list[fx.Node]] = {}  # block name -> the nodes that do not depend on its output
        self.read: dict[str, list[fx.Node]] = {}  # ... and those of them that a node after the block reads
        for name, node in self.node.items():
            after, todo = set(), [node]
            while todo:
                for user in todo.pop().users:
                    if user not in after:
                        after.add(user)
                        todo.append(user)
            self.before[name] = [n for n in graph.nodes if n not in after and n is not node]
            self.read[name] = [n for n in self.before[name] if any(u in after for u in n.users)]
        self.keeping = _Keeping(self.module, set(self.node.values()).union(*self.read.values()))
        self.resuming = fx.Interpreter(self.module)  # keeps nothing: `kept` stays the unsilenced forward's

    @classmethod
    def of(cls, model: nn.Module, blocks: dict[str, BranchedBlock]) -> _Resumable | None:
        """None for a network that torch.fx cannot trace (a forward that branches on a tensor's values)."""
        try:
            return cls(model, blocks)
        except Exception:  # fx raises many kinds (TraceError, TypeError, ...): the whole forward is the fallback
            return None

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[fx.Node, torch.Tensor]]:
        """The logits, and the values that running again from a block needs: each block's output and what
        the nodes after it read from before it."""
        self.keeping.kept = {}
        return self.keeping.run(x), self.keeping.kept

    def resume(self, block: str, output: torch.Tensor, kept: dict[fx.Node, torch.Tensor]) -> torch.Tensor:
        """The logits with `block`'s output replaced by `output`, running only what comes after the block."""
        env: dict[fx.Node, object] = {n: None for n in self.before[block]}  # present: not run again
        env.update({n: kept[n].clone() for n in self.read[block]})  # clones: an in-place op must not change `kept`
        env[self.node[block]] = output
        return self.resuming.run(initial_env=env)


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


@dataclass
class Ablation:
    accuracy: float  # test accuracy with nothing silenced
    without: dict[str, float]  # '<block>.<branch>' -> accuracy with that branch silenced
    only: dict[str, float]  # '<block>.<branch>' -> accuracy with every other branch of its block silenced
    energy: dict[str, float]  # '<block>.<branch>' -> share of its block's output energy


@torch.no_grad()
def ablate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
           step: Callable[[int], object] = lambda n: None) -> Ablation:
    """Every branch of every Inception-like block silenced in turn, and kept alone, on `images`: the accuracies
    `evaluate` gives with `silenced` (same batches, same values), and the energy shares, in one pass over the
    images. After each batch's unsilenced forward, a silenced one runs only what follows the block
    (`_Resumable`); a network fx cannot trace runs whole. `step(n)` is called after each batch of n images."""
    model.eval()
    blocks = branched_blocks(model)
    resumable = _Resumable.of(model, blocks)
    cases = {("without", f"{b}.{n}"): (b, {n}) for b, block in blocks.items() for n in block.branch_names}
    cases |= {("only", f"{b}.{n}"): (b, set(block.branch_names) - {n}) for b, block in blocks.items() for n in block.branch_names}
    correct: dict[object, torch.Tensor] = {}
    sums: dict[str, torch.Tensor] = {}
    dtype = autocast_dtype(images.device, cfg.amp)

    def count(case, views: list[torch.Tensor], target: torch.Tensor) -> None:
        logits = (views[0] + views[1]) / 2 if len(views) == 2 else views[0]  # tta_forward's mirror average
        correct[case] = correct.get(case, 0) + (logits.float().argmax(1) == target).sum()

    for i in range(0, len(images), cfg.eval_batch_size):
        target = labels[i : i + cfg.eval_batch_size]
        with autocast(images.device, dtype):
            x = model_input(images[i : i + cfg.eval_batch_size], cfg)
            views = [x, x.flip(-1)] if cfg.tta_hflip else [x]
            with thread_hooks(_energy_hooks(blocks, sums)):
                runs = [resumable.run(v) if resumable else (model(v), {}) for v in views]
            count("base", [logits for logits, _ in runs], target)
            for case, (block, off) in cases.items():
                if resumable and block in resumable.node:
                    node, slices = resumable.node[block], blocks[block].branch_slices()
                    outs = []
                    for _, kept in runs:
                        out = kept[node].clone()
                        for name in off:
                            out[:, slices[name]] = 0
                        outs.append(resumable.resume(block, out, kept))
                else:
                    with silenced(model, {block: off}):
                        outs = [model(v) for v in views]
                count(case, outs, target)
        step(len(target))
    acc = {case: c.item() / len(images) for case, c in correct.items()}
    return Ablation(acc.pop("base"), {k: v for (kind, k), v in acc.items() if kind == "without"},
                    {k: v for (kind, k), v in acc.items() if kind == "only"}, _shares(blocks, sums))


def load_analysable(checkpoint: str | Path, device: str = "auto") -> TrainedModel:
    """The trained model in `checkpoint`; a ValueError naming it when its network has no Inception-like blocks."""
    trained = load(checkpoint, device)
    if not branched_blocks(trained.network):
        raise ValueError(f"{checkpoint}: model {trained.config.model!r} has no Inception blocks to analyse")
    return trained


def analyze_checkpoint(checkpoint: str | Path, data: ImageSet, device: str = "auto",
                       step: Callable[[int], object] = lambda n: None) -> BranchReport:
    """Ablation accuracies, energy shares and (if recorded) gradient shares for one trained model; `step(n)` is
    called after each batch of n test images."""
    trained = load_analysable(checkpoint, device)
    model, cfg = trained.network, trained.config
    blocks = branched_blocks(model)
    dev = next(model.parameters()).device
    result = ablate(model, data.test_images.to(dev), data.test_labels.to(dev), cfg, step)
    grads = gradient_shares(checkpoint_dir(checkpoint))
    report = BranchReport(str(checkpoint), cfg.model, cfg.seed, result.accuracy)
    for block_name, block in blocks.items():
        for branch in block.branch_names:
            key = f"{block_name}.{branch}"
            report.rows.append(
                dict(block=block_name, branch=branch, acc_without=result.without[key], acc_only=result.only[key],
                     energy_share=result.energy[key], grad_share=None if grads is None else grads.get(key))
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
