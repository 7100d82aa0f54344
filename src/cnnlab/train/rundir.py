"""The run directory: config.json, metrics.csv, summary.json, checkpoints and curves.png."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from cnnlab.atomic import atomic_writer

METRIC_FIELDS = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "lr",
    "seconds",
]


def make_run_dir(root: str | Path, model: str) -> Path:
    """A new, empty runs/<time>-<model>/ directory (a numeric suffix avoids clashes)."""
    root = Path(root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = root / (f"{stamp}-{model}" + (f"-{i}" if i else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory under {root}")


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically."""
    with atomic_writer(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def append_metrics(path: str | Path, row: dict[str, Any]) -> None:
    """Append one epoch's row to metrics.csv, writing the header first if the file is new."""
    path = Path(path)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: _fmt(row.get(k)) for k in METRIC_FIELDS})


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """metrics.csv as a list of rows of floats (empty cells become NaN)."""
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in r.items()} for r in csv.DictReader(f)]


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def plot_curves(rows: list[dict[str, float]], path: str | Path, title: str = "") -> None:
    """curves.png: loss (left) and accuracy (right) per epoch, for train, validation and test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-"), ("val", "--"), ("test", ":")):
        loss = [r.get(f"{split}_loss", float("nan")) for r in rows]
        acc = [100 * r.get(f"{split}_acc", float("nan")) for r in rows]
        if any(v == v for v in loss):
            ax_l.plot(epochs, loss, style, marker="o", ms=3, label=split)
        if any(v == v for v in acc):
            ax_a.plot(epochs, acc, style, marker="o", ms=3, label=split)
    ax_l.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_a.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
