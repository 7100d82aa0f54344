"""How many optimiser steps a run takes: fixed by its epochs, or planned to fit a wall-time budget.

With a budget the run measures its own speed over its first steps, then sets the step count so that
training, the evaluation after every epoch and the final write-out end inside the budget. It measures
again every 50 steps and after every epoch and revises the count, so a machine that slows down (or speeds
up) midway is still met, even in a run shorter than one epoch. The learning-rate schedule reads `total_steps` on every step, so it always anneals to zero
at the planned end. The last epoch may be a partial pass over the training split.
"""

from __future__ import annotations

import math
import time
from typing import Callable

# Steps left out of the speed measurement: the first steps allocate buffers and pick kernels.
_SKIP_STEPS = 3
# Steps timed before the first plan: long enough to average over noise, short for a small budget.
_CALIBRATION_STEPS = 20
# Part of the budget held back for what the plan does not model (checkpoints, the final figure, jitter).
_RESERVE_FRACTION = 0.05
_RESERVE_SECONDS = 1.0
# After the first plan, the speed is measured again over every this many steps (not across an evaluation).
_REPLAN_STEPS = 50


class Plan:
    """A fixed number of steps: `epochs` full passes of `steps_per_epoch` steps, or `total_steps` exactly
    (the last epoch then a partial pass)."""

    def __init__(self, steps_per_epoch: int, epochs: int = 1, total_steps: int | None = None) -> None:
        if steps_per_epoch < 1:
            raise ValueError("the training split is smaller than one batch")
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * epochs if total_steps is None else total_steps
        # Makes every process of a data-parallel run take rank 0's step count (identity in one process).
        self.agree: Callable[[int], int] = lambda n: n
        self.stopped = False  # asked to end early (stop): no later revision extends the run again

    def stop(self, step: int) -> None:
        """End the run after `step` (the run's 1-based step count): the epoch in progress becomes the last."""
        self.total_steps = step
        self.stopped = True

    @property
    def epochs(self) -> int:
        """Passes over the training split, counting a partial last one."""
        return max(1, math.ceil(self.total_steps / self.steps_per_epoch))

    def steps_in_epoch(self, epoch: int) -> int:
        """Steps epoch `epoch` (1-based) takes under the current plan."""
        return max(0, min(self.steps_per_epoch, self.total_steps - (epoch - 1) * self.steps_per_epoch))

    def after_step(self, step: int, sync: Callable[[], None]) -> None:
        """Called after every optimiser step (1-based count). A fixed plan has nothing to do."""

    def after_epoch(self, epoch: int, steps_done: int, train_seconds: float, eval_seconds: float) -> None:
        """Called after each epoch's evaluation. A fixed plan has nothing to do."""


class BudgetPlan(Plan):
    """Steps planned to fit `budget` seconds of wall time counted from `start` (a time.perf_counter()).

    `eval_images` is how many images each epoch's evaluation runs through; before the first evaluation
    has been timed, its cost is estimated from the training speed (a forward pass is about a third of
    a training step, per image).
    """

    def __init__(
        self,
        steps_per_epoch: int,
        batch_size: int,
        budget: float,
        start: float,
        eval_images: int,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if budget <= 0:
            raise ValueError(f"the time budget must be positive, got {budget}")
        # Until the first measurement: one epoch, so the warm-up starts at a sensible slope.
        super().__init__(steps_per_epoch, 1)
        self.batch_size = batch_size
        self.budget = budget
        self.start = start
        self.eval_images = eval_images
        self.clock = clock
        self.step_seconds: float | None = None
        self.eval_seconds: float | None = None
        self._mark: tuple[int, float] | None = None  # (step, time) the current speed window started at

    def after_step(self, step: int, sync: Callable[[], None]) -> None:
        """Time windows of steps: the first (calibration) after _SKIP_STEPS, then one every _REPLAN_STEPS, each
        followed by a new plan; an evaluation ends a window (after_epoch)."""
        calibrating = self.step_seconds is None
        if self.stopped or (calibrating and step < _SKIP_STEPS):
            return
        if self._mark is not None and step - self._mark[0] < (_CALIBRATION_STEPS if calibrating else _REPLAN_STEPS):
            return
        sync()  # on a GPU, wait for the queued steps so that the clock measures them
        now = self.clock()
        if self._mark is not None:
            self.step_seconds = (now - self._mark[1]) / (step - self._mark[0])
            self._replan(done_steps=step, done_epochs=(step - 1) // self.steps_per_epoch)
        self._mark = (step, now)

    def after_epoch(self, epoch: int, steps_done: int, train_seconds: float, eval_seconds: float) -> None:
        if self.stopped:
            return
        if steps_done < epoch * self.steps_per_epoch:  # a partial epoch is the last one
            self.total_steps = steps_done
            return
        self.step_seconds = train_seconds / self.steps_per_epoch
        self.eval_seconds = eval_seconds
        self._mark = None  # the next window starts after this evaluation
        self._replan(done_steps=steps_done, done_epochs=epoch)

    def _replan(self, done_steps: int, done_epochs: int) -> None:
        per_step = max(self.step_seconds or 0.0, 1e-9)
        per_eval = self.eval_seconds
        if per_eval is None:
            per_eval = self.eval_images * per_step / self.batch_size / 3
        reserve = _RESERVE_SECONDS + _RESERVE_FRACTION * self.budget
        remaining = self.budget - reserve - (self.clock() - self.start)
        # Try ending in epoch k = the one in progress, the next, ...: each epoch still to finish costs
        # one evaluation; stop at the first epoch the budget cannot fill.
        best, size = done_steps, self.steps_per_epoch
        k = done_epochs
        while True:
            k += 1
            affordable = done_steps + math.floor((remaining - (k - done_epochs) * per_eval) / per_step)
            n = min(k * size, affordable)
            if n <= max(best, (k - 1) * size):
                break
            best = n
            if n < k * size:
                break
        self.total_steps = self.agree(best)
