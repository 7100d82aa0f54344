"""Compare finished runs: one table and one figure overlaying their curves."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.analysis.cost import forward_flops
from cnnlab.data.sets.registry import lookup
from cnnlab.models import count_parameters, create_model
from cnnlab.runs.rundir import Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COMPARE_HEADERS = ["model", "recipe", "data", "params", "MFLOPs/img", "epochs", "best val", "test acc", "train time"]


def _data_label(name: str) -> str:
    """A run's data set in a table: its title, or the path of one named by a path (an image folder)."""
    try:
        dataset = lookup(name)
    except ValueError:  # a data set this cnnlab does not have: its name as recorded
        return name
    return dataset.path if dataset.entry.takes_path else dataset.title


def compare_rows(runs: list[Run]) -> list[list[str]]:
    """One row per run: model, recipe, data set, parameters, forward FLOPs per image (at the run's image
    size and channels), epochs, best validation accuracy, test accuracy at the selected epoch, training time."""
    rows = []
    for r in runs:
        kwargs = r.summary.get("model_kwargs", {})  # runs from before it was recorded: MNIST's 1 x 28 x 28
        model = r.network if r.network is not None else create_model(r.config["model"], block=r.config.get("block", ""),
                                                                     **kwargs)
        s = r.summary
        val = s.get("best_val_acc")
        rows.append(
            [
                r.config["model"],
                r.config.get("recipe", "?"),
                r.data_title or _data_label(r.config.get("dataset", "mnist")),
                f"{count_parameters(model):,}",
                f"{forward_flops(model, kwargs.get('in_channels', 1), kwargs.get('image_size', 28)) / 1e6:.2f}",
                str(s["epochs"]),
                "-" if val is None else f"{100 * val:.2f}%",
                f"{100 * s['test_acc']:.2f}%",
                f"{s['train_seconds']:.0f}s",
            ]
        )
    return rows


def plot_compare(runs: list[Run], path: str | Path | None) -> Figure:
    """Training loss and held-out error (validation, or test when there is none) per epoch, all runs: the Figure,
    also written to `path` unless it is None."""
    from matplotlib.figure import Figure  # not pyplot's: nothing to close or leak, no backend switched (rundir.plot_curves)

    fig = Figure(figsize=(11, 4.2))
    ax_l, ax_e = fig.subplots(1, 2)
    for r in runs:
        ep = [m["epoch"] for m in r.metrics]
        ax_l.plot(ep, [m["train_loss"] for m in r.metrics], marker="o", ms=3, label=r.label)
        has_val = any(m["val_acc"] == m["val_acc"] for m in r.metrics)
        key = "val_acc" if has_val else "test_acc"
        err = [100 * (1 - m[key]) for m in r.metrics]
        ax_e.plot(ep, err, marker="o", ms=3, label=f"{r.label} [{key.split('_')[0]}]")
    ax_l.set(xlabel="epoch", ylabel="training loss (as trained)", title="training loss", yscale="log")
    ax_e.set(xlabel="epoch", ylabel="error (%), log scale", title="held-out error rate", yscale="log")
    from cnnlab.plotting import plain_log_ticks

    for ax in (ax_l, ax_e):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        plain_log_ticks(ax.yaxis)  # minor ticks labelled too: a log axis spanning less than a decade shows one number
        ax.tick_params(axis="y", which="minor", labelsize=7)
    fig.tight_layout()
    if path is not None:
        from cnnlab.plotting import save_figure  # matplotlib is imported only where a figure is made

        save_figure(fig, path)
    return fig
