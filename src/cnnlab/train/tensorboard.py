"""TensorBoard event files beside metrics.csv, for people who keep their runs in TensorBoard: an Observer
(train/events.py) that a run's config asks for (`tensorboard=True`, `cnnlab train --tensorboard`).

It writes RUN/tensorboard/, every scalar on one x axis, the run's optimiser step count, so that the training loss
every `log_every` steps and the epochs' figures line up in one chart:

    loss/train_steps        mean training loss since the previous point (every log_every steps)
    loss/train, loss/val, loss/test, accuracy/train, accuracy/val, accuracy/test
                            each epoch's row of metrics.csv, at the step the epoch ended (val: with a hold-out)
    lr                      the learning rate the epoch started with, at the step it started

`tensorboard --logdir runs` then shows every run. Optional: `pip install 'cnnlab[tensorboard]'`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnnlab.atomic import make_directory
from cnnlab.runs.rundir import TENSORBOARD_DIR, read_metrics
from cnnlab.train.events import Observer

INSTALL = "pip install 'cnnlab[tensorboard]'"
EPOCH_SCALARS = {  # tag: the column of metrics.csv it shows
    "loss/train": "train_loss", "loss/val": "val_loss", "loss/test": "test_loss",
    "accuracy/train": "train_acc", "accuracy/val": "val_acc", "accuracy/test": "test_acc",
}


class TensorBoardWriter(Observer):
    """Writes one run's event files into its run directory's tensorboard/ folder.

    Made before the run starts, so that a missing package is one error before any run directory exists; the
    file is opened when the run starts, and by the first process alone (the only one its observers tell).
    """

    def __init__(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's module needs the tensorboard package, which is an extra
            raise ValueError(f"writing TensorBoard event files (--tensorboard) needs the tensorboard package: {INSTALL}") from None
        self._summary_writer = SummaryWriter
        self._writer = None
        self._steps = 0  # the run's step count at the start of the coming epoch

    def started(self, run_dir: Path, config: dict[str, Any], total_steps: int, steps_per_epoch: int) -> None:
        # A resumed run rewrote metrics.csv up to its checkpoint: it goes on from that row's step, and TensorBoard
        # is told to drop what the stopped process wrote after it (purge_step), as resume drops those rows.
        metrics = Path(run_dir) / "metrics.csv"
        rows = read_metrics(metrics) if metrics.exists() else []
        self._steps = int(rows[-1]["steps"]) if rows else 0
        # Made here, never through a link: TensorBoard would follow one and write its event files where it points
        # (the run's lock refused a link there already; this is the check at the point of use).
        events = make_directory(Path(run_dir) / TENSORBOARD_DIR)
        self._writer = self._summary_writer(str(events), purge_step=self._steps + 1 if rows else None)
        if not rows:
            self._writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def step(self, step: int, total_steps: int, epoch: int, loss: float) -> None:
        self._writer.add_scalar("loss/train_steps", loss, step)
        self._writer.flush()  # a few hundred bytes every log_every steps: a killed run keeps its curve

    def epoch(self, row: dict[str, Any]) -> None:
        end, walltime = int(row["steps"]), row["time"]
        self._writer.add_scalar("lr", row["lr"], self._steps, walltime=walltime)
        for tag, column in EPOCH_SCALARS.items():
            if row.get(column) is not None:  # no validation split: no val scalars
                self._writer.add_scalar(tag, row[column], end, walltime=walltime)
        self._steps = end
        self._writer.flush()

    def finished(self, summary: dict[str, Any]) -> None:
        self._writer.close()
