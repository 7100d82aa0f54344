"""Compare finished runs: one table and one figure overlaying their curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def _percent(value: Any) -> str:
    """An accuracy of summary.json (a fraction) as the table shows it, "99.57%", or "-" where the run has none:
    null, or a number that is not finite (a summary.json written with NaN for the missing validation accuracy)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{100 * value:.2f}%"


def compare_rows(runs: list[Run]) -> list[list[str]]:
    """One row per run: model, recipe, data set, parameters, forward FLOPs per image (at the run's image
    size and channels), epochs, best validation accuracy, test accuracy at the selected epoch, training time."""
    rows = []
    for r in runs:
        kwargs = r.summary.get("model_kwargs", {})  # runs from before it was recorded: MNIST's 1 x 28 x 28
        model = r.network if r.network is not None else create_model(r.config["model"], block=r.config.get("block", ""),
                                                                     **kwargs)
        s = r.summary
        rows.append(
            [
                r.config["model"],
                r.config.get("recipe", "?"),
                r.data_title or _data_label(r.config.get("dataset", "mnist")),
                f"{count_parameters(model):,}",
                f"{forward_flops(model, kwargs.get('in_channels', 1), kwargs.get('image_size', 28)) / 1e6:.2f}",
                str(s["epochs"]),
                _percent(s.get("best_val_acc")),
                _percent(s.get("test_acc")),
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
    for place, r in enumerate(runs):
        ep = [m["epoch"] for m in r.metrics]
        ax_l.plot(ep, [m["train_loss"] for m in r.metrics], marker="o", ms=3, label=r.label)
        has_val = any(m["val_acc"] == m["val_acc"] for m in r.metrics)
        key = "val_acc" if has_val else "test_acc"
        err = [100 * (1 - m[key]) for m in r.metrics]
        (line,) = ax_e.plot(ep, err, marker="o", ms=3, label=f"{r.label} [{key.split('_')[0]}]")
        _label_selected(ax_e, r, ep, err, has_val, line.get_color(), place)
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


def _label_selected(ax, run: Run, epochs: list[float], errors: list[float], has_val: bool, colour: str,
                    place: int) -> None:
    """Label the run's selected epoch on its held-out curve with the accuracies its table row shows ("val 99.12%,
    test 99.05%"; "test 98.50%" for a run without a validation split, whose curve is the test error), so the figure
    reads without the table. The labels of runs that chose the same epoch are stacked by `place`."""
    s = run.summary
    test = f"test {_percent(s.get('test_acc'))}"
    text = f"val {_percent(s.get('best_val_acc'))}, {test}" if has_val else test
    if not epochs:
        return
    best = s.get("best_epoch") if s.get("best_epoch") in epochs else epochs[-1]
    y = errors[epochs.index(best)]
    # An error of 0 (or none recorded) has no place on the log axis: the label then points at the axis's foot.
    at, coords = ((best, y), "data") if y > 0 else ((best, 0.0), ("data", "axes fraction"))
    ax.annotate(text, at, xycoords=coords, xytext=(-6, 10 + 12 * place), textcoords="offset points", ha="right",
                fontsize=8, color=colour, arrowprops=dict(arrowstyle="-", color=colour, lw=0.6),
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
