"""What a training run tells its user: per-epoch lines or progress bars, where the run is, and how to continue
one that stopped."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Literal, Union

from tqdm.auto import tqdm

from cnnlab.train.loop import STOPPED_RUN, NonFiniteLoss


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


