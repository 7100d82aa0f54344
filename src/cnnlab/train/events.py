"""Who watches a run: its terminal (train/progress.Terminal), the web page's training panel (serve/training.py),
TensorBoard (train/tensorboard.py), a notebook. An Observer is told when the run starts, every `log_every` steps,
after each epoch and at the finish, and every line the run reports; it may ask the run to stop early.

Only the first process of a data-parallel run tells its observers what happens; every process asks them whether
to stop, and the processes stop together if any one's observers asked (a collective: give each process the
same kind of observers, or none).

A stop ends the run as if its plan had ended at that step: the epoch in progress becomes the last (a partial
pass), it is evaluated and checkpointed, and the run finishes as usual (summary.json, curves.png), so what was
trained so far is an ordinary finished run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


class Observer:
    """Subclass and override what you need; every method does nothing by default. Called from the training
    process's thread: an observer that feeds another thread or process must hand the data over itself, and
    must be quick (a step waits for it)."""

    def started(self, run_dir: Path, config: dict[str, Any], total_steps: int, steps_per_epoch: int) -> None:
        """The run directory exists and training is about to begin (or resume). `total_steps` is the plan,
        which a time budget revises after its first steps and after every epoch (see `step`)."""

    def step(self, step: int, total_steps: int, epoch: int, loss: float) -> None:
        """Every `log_every` steps: the run's step count, the current plan, and the mean training loss over the
        steps since the last call (on the augmented batches, as the optimiser saw them)."""

    def epoch(self, row: dict[str, Any]) -> None:
        """An epoch ended and was recorded: the row metrics.csv got (epoch, steps, train_loss, train_acc,
        val_loss, val_acc, test_loss, test_acc, lr, seconds, elapsed, time; val_* are None without a
        validation split)."""

    def finished(self, summary: dict[str, Any]) -> None:
        """The run finished and wrote summary.json: this is its content (run_dir, test_acc, epochs, ...)."""

    def should_stop(self) -> bool:
        """Asked every `log_every` steps: True ends the run at this step, keeping what was trained."""
        return False

    def say(self, line: str) -> None:
        """A line the run reports to its user: where its directory is, an epoch's figures, a warning."""


class Observers:
    """The observers of one run, told together; `main` is False on the processes that only ask about stops."""

    def __init__(self, observers: Sequence[Observer] = (), main: bool = True) -> None:
        self.all = tuple(observers)
        self.main = main

    def __bool__(self) -> bool:
        return bool(self.all)

    def started(self, run_dir: Path, config: dict[str, Any], total_steps: int, steps_per_epoch: int) -> None:
        for o in self._told():
            o.started(run_dir, config, total_steps, steps_per_epoch)

    def step(self, step: int, total_steps: int, epoch: int, loss: float) -> None:
        for o in self._told():
            o.step(step, total_steps, epoch, loss)

    def epoch(self, row: dict[str, Any]) -> None:
        for o in self._told():
            o.epoch(dict(row))

    def finished(self, summary: dict[str, Any]) -> None:
        for o in self._told():
            o.finished(dict(summary))

    def should_stop(self) -> bool:
        return any(o.should_stop() for o in self.all)

    def say(self, line: str) -> None:
        for o in self._told():
            o.say(line)

    def _told(self) -> tuple[Observer, ...]:
        return self.all if self.main else ()
