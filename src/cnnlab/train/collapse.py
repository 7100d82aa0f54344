"""A run whose training falls back to chance is noticed from its per-epoch history, so that an epoch chosen early
on a few dozen validation images cannot hide it (a learning rate too high for the batch, say)."""

from __future__ import annotations

import math
from typing import Any

# Training is "at chance" when its loss is within 5% of ln(classes), a uniform guess's, or its accuracy within a
# tenth of the way from chance to perfect; it has "learned" once its loss is a quarter below ln(classes). Label
# smoothing raises the best loss but not the uniform guess's, so both hold with it.
_AT_CHANCE_LOSS, _LEARNED_LOSS, _AT_CHANCE_ACC = 0.95, 0.75, 0.1


def _at_chance(row: dict[str, Any], num_classes: int) -> bool:
    chance = 1 / num_classes
    return row["train_loss"] >= _AT_CHANCE_LOSS * math.log(num_classes) or row["train_acc"] < chance + _AT_CHANCE_ACC * (1 - chance)


def collapse_epoch(history: list[dict[str, Any]], num_classes: int, planned_epochs: int) -> int | None:
    """The epoch from which training has been at chance up to the latest one, when it had learned before
    (a collapse), or when it has sat there since the start for a quarter of the run (at least 3 epochs);
    else None. A run that recovers has no collapse."""
    start = len(history)
    while start > 0 and _at_chance(history[start - 1], num_classes):
        start -= 1
    if start == len(history):
        return None
    learned = any(r["train_loss"] <= _LEARNED_LOSS * math.log(num_classes) for r in history[:start])
    if learned or len(history) - start >= max(3, planned_epochs // 4):
        return history[start]["epoch"]
    return None


def collapse_warning(model: str, history: list[dict[str, Any]], num_classes: int, start: int, lr: float) -> str:
    """The line that says so, naming the epoch and what to try."""
    row = history[-1]
    chance = f"ln {num_classes} = {math.log(num_classes):.4f}"
    before = [r for r in history if r["epoch"] < start]
    low = min(before, key=lambda r: r["train_loss"]) if before else None
    if low is not None and low["train_loss"] <= _LEARNED_LOSS * math.log(num_classes):
        what = (f"training collapsed: its loss {row['train_loss']:.4f} is back at chance ({chance}) after "
                f"{low['train_loss']:.4f} in epoch {low['epoch']}")
    else:
        what = f"training has sat at chance (loss {row['train_loss']:.4f}, {chance}) since epoch {start}"
    return f"{model}: warning: epoch {row['epoch']}: {what}; a lower --lr (this run's: {lr:g}) may help"
