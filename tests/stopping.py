"""A finished run made to look like one stopped before its end, for tests of --resume that need something to train.

A run stopped between epochs has a last.pt whose steps fall short of its planned total and no summary.json yet; this
module makes a finished run's files say exactly that, its checkpoint re-saved as cnnlab writes them.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.runs import load_checkpoint, save_checkpoint


def as_stopped(run: Path, steps_left: int = 2) -> Path:
    """`run` with `steps_left` steps still to take (last.pt's plan lengthened) and no summary.json."""
    state = load_checkpoint(run / "last.pt")
    state["total_steps"] = state["steps"] + steps_left
    save_checkpoint(run / "last.pt", state)
    (run / "summary.json").unlink(missing_ok=True)
    return run
