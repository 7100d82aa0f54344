"""The one writer of a run directory: the training process that holds its lock (rank 0 alone under torchrun).
Everything a run leaves is written here, in the order that keeps a killed run resumable: config.json, a
metrics.csv row and best.pt after each epoch, then last.pt (the one before it kept as last.prev.pt), and at the
finish summary.json and curves.png. Readers use runs/rundir.load_run and runs/checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab.runs.checkpoint import Checkpoint
from cnnlab.runs.rundir import (RunDirLock, append_metrics, clear_unstarted, keep_previous, make_run_dir, plot_curves,
                                remove_partial_writes, remove_unstarted, write_json, write_metrics)


class RunWriter:
    """A locked run directory and what is written into it. `close(stopped)` releases the lock, and removes a new
    run's directory that stopped before its first epoch ended (nothing in it could be resumed or read)."""

    def __init__(self, run_dir: Path, fresh: bool) -> None:
        self.run_dir = run_dir
        self.fresh = fresh
        self._lock = RunDirLock(run_dir)  # first: a named run's directory may be another process's, and is left alone

    @classmethod
    def new(cls, out_root: Path, model: str, run_name: str | None, config: dict[str, Any]) -> "RunWriter":
        """A new run directory under out_root, locked, with its config.json."""
        writer = cls(make_run_dir(out_root, model, run_name), fresh=True)
        try:
            if run_name is not None:  # a named run may start again where one stopped before its first checkpoint
                clear_unstarted(writer.run_dir)
            write_json(writer.run_dir / "config.json", config)
        except BaseException:
            writer.close(stopped=True)
            raise
        return writer

    @classmethod
    def lock(cls, run_dir: Path) -> "RunWriter":
        """A stopped run's directory, locked before anything in it is read (the run may still be going)."""
        return cls(run_dir, fresh=False)

    def reopen(self, config: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Make the directory what its checkpoint says: no half-written files, no metrics rows after it, the config
        as it runs now (an image folder's new place, the device)."""
        remove_partial_writes(self.run_dir)
        write_metrics(self.run_dir / "metrics.csv", history)
        write_json(self.run_dir / "config.json", config)

    def epoch(self, row: dict[str, Any], ckpt: Checkpoint, is_best: bool, branch_grads: dict[str, Any] | None) -> None:
        """An epoch's row, branch gradients, best.pt when it is the best, then last.pt: a run killed in between
        resumes from last.pt and rewrites metrics.csv from it."""
        append_metrics(self.run_dir / "metrics.csv", row)
        if branch_grads is not None:
            write_json(self.run_dir / "branch_grads.json", branch_grads)
        if is_best:
            ckpt.save(self.run_dir / "best.pt")
        self.last(ckpt)

    def last(self, ckpt: Checkpoint) -> None:
        """last.pt, atomically, keeping the one it replaces as last.prev.pt (a damaged last.pt then costs one
        interval)."""
        keep_previous(self.run_dir / "last.pt", self.run_dir / "last.prev.pt")
        ckpt.save(self.run_dir / "last.pt")

    def finish(self, summary: dict[str, Any] | None, history: list[dict[str, Any]], title: str, note: str) -> None:
        """summary.json (None: already written, by a run killed during its finish) and curves.png."""
        if summary is None:
            remove_partial_writes(self.run_dir)
        else:
            write_json(self.run_dir / "summary.json", summary)
        if summary is not None or not (self.run_dir / "curves.png").exists():
            plot_curves(history_as_floats(history), self.run_dir / "curves.png", title, note)

    def close(self, stopped: bool) -> None:
        self._lock.release()
        if stopped and self.fresh:
            remove_unstarted(self.run_dir)


def history_as_floats(history: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{k: float("nan") if v is None else float(v) for k, v in r.items()} for r in history]
