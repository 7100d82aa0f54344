"""What a training run tells its user: the terminal, an observer like any other (per-epoch lines, where the run
is, warnings) with a progress bar during each epoch (a step hook), and how to continue a run that stopped."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Literal, Union

import torch

from tqdm.auto import tqdm

from cnnlab.train.events import Observer
from cnnlab.train.loop import STOPPED_RUN, EpochPosition, NonFiniteLoss, StepHook


def mark_stop(run_dir: Path) -> Callable[..., bool]:
    """An ExitStack exit callback that marks an exception leaving the run with the run's directory."""

    def mark(exc_type, exc, tb) -> bool:
        if exc is not None and getattr(exc, STOPPED_RUN, None) is None:
            setattr(exc, STOPPED_RUN, run_dir)
        return False  # never swallows the exception

    return mark


def stop_advice(exc: BaseException) -> list[str]:
    """What to tell the user about the run that `exc` stopped (Ctrl-C, a lost peer, any error): where its
    directory is and the command that continues it. Empty when `exc` came before the directory existed, and
    for a loss that stopped being finite: its own message names the directory, and resuming would only
    repeat the same steps."""
    run_dir = getattr(exc, STOPPED_RUN, None)
    if run_dir is None or isinstance(exc, NonFiniteLoss):
        return []
    if not Path(run_dir).exists():
        return [f"no epoch had finished, so nothing was kept ({run_dir} removed): start the run again"]
    if not (Path(run_dir) / "last.pt").exists():
        return [f"no epoch of {run_dir} had finished, so there is nothing to resume: start the run again"]
    return [f"the finished epochs are kept in {run_dir}; continue with:", f"cnnlab train --resume {run_dir}"]


# What a run prints: True chooses by where the output goes (see progress_mode).
Progress = Union[bool, Literal["bar", "lines", "off"]]


def progress_mode(progress: Progress) -> str:
    """'bar' (a progress bar during each epoch and a line after it), 'lines' (the line alone) or 'off'.
    True picks bars on a terminal and plain lines when the output goes to a file or a pipe, where a
    bar's carriage returns would fill the log."""
    if progress is True:
        return "bar" if sys.stdout.isatty() and sys.stderr.isatty() else "lines"
    if progress is False:
        return "off"
    if progress not in ("bar", "lines", "off"):
        raise ValueError(f"unknown progress {progress!r}; choose from True, False, 'bar', 'lines', 'off'")
    return progress


def say(mode: str, line: str) -> None:
    if mode == "bar":
        tqdm.write(line)  # above a bar that is still drawn
    elif mode == "lines":
        print(line, flush=True)  # a log file shows each line as it happens




class Terminal(Observer):
    """The run's lines on the terminal, as `mode` says: above the bar, as plain lines, or not at all."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def say(self, line: str) -> None:
        say(self.mode, line)


class EpochBar(StepHook):
    """A progress bar over each epoch's steps (mode 'bar' on the first process), closed (its line cleared) however
    the epoch ends, so that no message lands on a half-drawn bar."""

    def __init__(self, model: str, plan, of: str) -> None:
        self.model, self.plan, self.of = model, plan, of
        self.bar: tqdm | None = None
        self.epoch = 0

    def epoch_started(self, epoch: int, position: EpochPosition) -> None:
        self.epoch = epoch
        self.bar = tqdm(total=self.plan.steps_in_epoch(epoch), initial=position.step, desc=f"{self.model} {epoch}/{self.of}",
                        leave=False, unit="step")

    def at_log(self, step: int, steps: int, loss: float, sums: torch.Tensor) -> bool:
        self.bar.set_postfix(loss=f"{float(sums[0]) / float(sums[2]):.4f}", refresh=False)
        return False

    def after_step(self, steps: int) -> None:
        self.bar.total = self.plan.steps_in_epoch(self.epoch)  # a time budget may revise it
        self.bar.update(1)

    def epoch_ended(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
