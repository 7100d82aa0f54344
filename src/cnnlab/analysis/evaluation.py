"""Evaluate a trained model on the test set: accuracy per class, the most confused pairs, a confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from cnnlab.data import ImageSet
from cnnlab.runs.trained import TrainedModel
from cnnlab.tables import display_width

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class Evaluation:
    model: str
    accuracy: float
    per_class: list[float]  # accuracy of each true class
    confusion: torch.Tensor  # [true, predicted] counts, int64
    confused_pairs: list[tuple[int, int, int]]  # (true, predicted, count), most frequent first
    classes: tuple[str, ...] = tuple(str(d) for d in range(10))  # class names, by label


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[true, predicted] counts."""
    idx = labels.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def evaluate_model(trained: TrainedModel, data: ImageSet | None = None, top_pairs: int = 5,
                   step: Callable[[int], object] = lambda n: None) -> Evaluation:
    """Accuracy, per-class accuracy, confusion matrix and the most confused pairs on the test set of `data` (by default
    the data set it was trained on: `TrainedModel.load_data`), from the trained model's own logits (`logits`: the
    forward that its `evaluate` scores, mirror-averaged as it was trained); `step(n)` is told each batch of n test
    images done."""
    data = data if data is not None else trained.load_data()
    preds = trained.logits(data.test_images, step).argmax(1).cpu()
    labels = data.test_labels.cpu()
    k = trained.model_kwargs["num_classes"]
    cm = confusion_matrix(preds, labels, k)
    per_class = (cm.diag().float() / cm.sum(1).clamp(min=1).float()).tolist()
    off = cm.clone()
    off.fill_diagonal_(0)
    flat = off.flatten()
    order = flat.argsort(descending=True)[:top_pairs]
    pairs = [(int(i) // k, int(i) % k, int(flat[i])) for i in order if flat[i] > 0]
    acc = cm.diag().sum().item() / max(1, cm.sum().item())
    return Evaluation(trained.config.model, acc, per_class, cm, pairs, tuple(data.classes))


def plot_confusion(ev: Evaluation, path: str | Path | None) -> Figure:
    """Counts per (true, predicted) cell, the diagonal dimmed so mistakes stand out: the Figure, also written to
    `path` (confusion.png) unless it is None."""
    from matplotlib.figure import Figure  # not pyplot's: nothing to close or leak, no backend switched (rundir.plot_curves)
    from matplotlib.ticker import MaxNLocator

    from cnnlab.plotting import font_family

    cm = ev.confusion.numpy()
    k = cm.shape[0]
    off = cm.copy()
    off[range(k), range(k)] = 0
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.subplots()
    im = ax.imshow(off, cmap="Reds", vmin=0, vmax=max(1, int(off.max())))  # no mistakes: white, not one flat colour
    dark = _luminance(im.cmap(im.norm(off))) < _WHITE_TEXT_BELOW  # each cell's colour as drawn
    for t in range(k):
        for p in range(k):
            if cm[t, p]:
                colour = "white" if dark[t, p] else "dimgrey" if t == p else "black"  # the diagonal's counts dimmed
                ax.text(p, t, str(cm[t, p]), ha="center", va="center", fontsize=7, color=colour)
    names = list(ev.classes) if len(ev.classes) == k else [str(i) for i in range(k)]
    title = f"{ev.model}: test accuracy {100 * ev.accuracy:.2f}% (colour: errors only)"
    family = font_family(title, *names)  # class names are folder names: 猫 狗 鸟 need a CJK font
    ax.set_xticks(range(k), names, fontfamily=family)
    ax.set_yticks(range(k), names, fontfamily=family)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontfamily=family)
    if any(display_width(n) > 2 for n in names):
        for tick in ax.get_xticklabels():
            tick.set(rotation=45, ha="right")
    fig.colorbar(im, ax=ax, fraction=0.046, ticks=MaxNLocator(integer=True), format="{x:.0f}")  # counts: whole numbers
    fig.tight_layout()
    if path is not None:
        from cnnlab.plotting import save_figure  # matplotlib is imported only where a figure is made

        save_figure(fig, path)
    return fig


# White text on a background darker than this relative luminance, black on a lighter one: the threshold where the
# two have the same contrast ratio in WCAG 2's formula, (1 + 0.05) / (L + 0.05) = (L + 0.05) / (0 + 0.05).
_WHITE_TEXT_BELOW = 0.179


def _luminance(rgba: np.ndarray) -> np.ndarray:
    """WCAG 2's relative luminance of sRGB colours (..., 4), 0 for black to 1 for white."""
    c = rgba[..., :3]
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return linear @ np.array([0.2126, 0.7152, 0.0722])
