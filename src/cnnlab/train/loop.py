"""One epoch of optimiser steps: the parts a run built (train/parts.py), where the epoch starts, and one list of
hooks told what happens. Everything else a run does around its steps (the terminal's bar, the threads fitted to the
free cores, gradient norms, the observers and their stop, checkpoints within the epoch) is a StepHook."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from cnnlab.device import autocast
from cnnlab.errors import CnnlabError
from cnnlab.runs.forward import model_input
from cnnlab.train.distributed import all_reduce_min, all_reduce_sum

if TYPE_CHECKING:
    from cnnlab.train.parts import Parts


@dataclass
class EpochPosition:
    """Where an epoch's steps begin: its first step, or where a checkpoint written within it left off.

    `rng_at_start` is the generator's state when the epoch began (it rebuilds the epoch's permutation) and
    `rng_now` its state at the checkpoint (the augmentation of the steps still to come); `sums` are this process's
    running loss sum, correct count and images seen over the steps taken, so that the epoch's row comes out as an
    unbroken epoch's."""

    rng_at_start: torch.Tensor
    lr: float  # at the epoch's start: its row reports it
    step: int = 0  # steps of the epoch already taken
    rng_now: torch.Tensor | None = None
    sums: torch.Tensor | None = None  # float64 (loss sum, correct, seen)


class StepHook:
    """Told what an epoch's steps do; every method does nothing by default. Called on every process, in the
    training thread; a hook that syncs with the host or the other processes must do so only in `at_log`, which
    every process calls at the same step."""

    def epoch_started(self, epoch: int, position: EpochPosition) -> None:
        """Before the epoch's first step (or the first step after a checkpoint within it)."""

    def after_backward(self) -> None:
        """The gradients of this step exist (before clipping and the optimiser step)."""

    def after_step(self, steps: int) -> None:
        """An optimiser step was taken: `steps` of this epoch so far."""

    def at_log(self, step: int, steps: int, loss: float, sums: torch.Tensor) -> bool:
        """Every log_every steps: the run's step count, the epoch's, the mean training loss since the last call,
        and this process's running sums (float64 loss sum, correct, seen). True ends the run at this step."""
        return False

    def epoch_ended(self) -> None:
        """The epoch's steps are over, however they ended (an exception too)."""


class StepHooks(StepHook):
    """The hooks of one run, told in order."""

    def __init__(self, hooks: Sequence[StepHook]) -> None:
        self.all = tuple(hooks)

    def epoch_started(self, epoch: int, position: EpochPosition) -> None:
        for h in self.all:
            h.epoch_started(epoch, position)

    def after_backward(self) -> None:
        for h in self.all:
            h.after_backward()

    def after_step(self, steps: int) -> None:
        for h in self.all:
            h.after_step(steps)

    def at_log(self, step: int, steps: int, loss: float, sums: torch.Tensor) -> bool:
        # A hook that asks to stop ends the round (every process decides together, so all skip the same hooks).
        return any(h.at_log(step, steps, loss, sums) for h in self.all)

    def epoch_ended(self) -> None:
        for h in self.all:
            h.epoch_ended()


def train_one_epoch(p: Parts, epoch: int, hooks: StepHook, position: EpochPosition) -> tuple[float, float, int]:
    """One pass over the training split, or the part of it the plan gives epoch `epoch`, from `position`.

    Returns (mean loss, accuracy, steps taken), over all processes of a data-parallel run. Syncs with the host only
    every log_every steps, to tell the hooks and to stop at a loss that is no longer finite (naming the first such
    step), and once more when a time budget times its first steps. A hook's `at_log` may end the run at that step
    (the plan then stops there).
    """
    cfg, loader, world = p.cfg, p.loader, p.world
    p.trained.train()
    device = loader.images.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sums = torch.zeros(3, dtype=torch.float64) if position.sums is None else position.sums
    loss_sum, correct = sums[0].clone().to(device), sums[1].clone().to(device)
    no_bad_step = torch.iinfo(torch.int64).max
    first_bad = torch.full((), no_bad_step, dtype=torch.int64, device=device)
    seen, steps = int(sums[2]), position.step
    watched = (loss_sum.item(), seen)  # loss sum and images at the last log
    first_step = (epoch - 1) * len(loader)
    # This process's part of each global batch, and the weight that makes DDP's mean of the per-process
    # gradients the gradient of the whole batch when the parts differ in size (1 when they do not).
    part_rows = loader.part[1] if loader.part else loader.batch_size
    weight = part_rows * world.world_size / loader.batch_size

    def check_finite() -> None:
        bad = all_reduce_min(first_bad.clone(), world).item()
        if bad != no_bad_step:
            raise NonFiniteLoss(epoch, bad, cfg.lr)

    def running() -> torch.Tensor:
        return torch.stack([loss_sum, correct, torch.tensor(float(seen), dtype=torch.float64, device=device)])

    p.generator.set_state(position.rng_at_start)
    hooks.epoch_started(epoch, position)
    try:
        for images, labels in loader.batches(position.step, position.rng_now):
            if steps >= p.plan.steps_in_epoch(epoch):
                break
            loss, logits = _step(p, images, labels, weight, hooks)
            steps += 1
            first_bad = torch.where(torch.isfinite(loss) | (first_bad != no_bad_step), first_bad, first_step + steps)
            loss_sum += loss * len(labels)
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += len(labels)
            p.plan.after_step(first_step + steps, sync)
            if steps % cfg.log_every == 0:
                check_finite()
                total = loss_sum.item()
                recent, watched = (total - watched[0]) / (seen - watched[1]), (total, seen)
                if hooks.at_log(first_step + steps, steps, recent, running()):
                    p.plan.stop(first_step + steps)
            hooks.after_step(steps)
    finally:
        hooks.epoch_ended()
    if steps == 0:
        raise ValueError("the training split is smaller than one batch")
    check_finite()
    loss_total, correct_total, seen_total = all_reduce_sum(running(), world).tolist()
    return loss_total / seen_total, correct_total / seen_total, steps


def _step(p: Parts, images: torch.Tensor, labels: torch.Tensor, weight: float,
          hooks: StepHook) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch: (the loss, detached; the logits)."""
    cfg = p.cfg
    x = model_input(images, cfg, p.augment)
    with autocast(x.device, p.amp_dtype):
        logits = p.trained(x)
    # the loss in float32 at least: autocast's bfloat16 logits are widened, float64 ones kept
    loss = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), labels,
                           label_smoothing=cfg.label_smoothing)
    p.optimizer.zero_grad(set_to_none=True)
    (loss if weight == 1 else loss * weight).backward()
    hooks.after_backward()
    if cfg.grad_clip > 0:  # no host sync: the norm stays a tensor
        torch.nn.utils.clip_grad_norm_(p.trained.parameters(), cfg.grad_clip, foreach=True)
    p.optimizer.step()
    p.schedule.step()
    if p.average is not None:
        p.average.update()
    return loss.detach(), logits


# The attribute that carries a stopped run's directory on the exception that stopped it (see progress.mark_stop).
STOPPED_RUN = "cnnlab_run_dir"


class NonFiniteLoss(CnnlabError, FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch, the run's step and, once the
    run has marked it (see progress.stop_advice), the run directory."""

    def __init__(self, epoch: int, step: int, lr: float) -> None:
        super().__init__(epoch, step, lr)
        self.epoch, self.step, self.lr = epoch, step, lr

    def __str__(self) -> str:
        run_dir = getattr(self, STOPPED_RUN, None)
        if run_dir is not None and not Path(run_dir).exists():  # in its first epoch: the directory was removed
            kept = f"no epoch had finished, so nothing was kept ({run_dir} removed)"
        else:
            kept = "the checkpoints of earlier epochs are kept" + (f" in {run_dir}" if run_dir is not None else "")
        return (
            f"the training loss stopped being a finite number at step {self.step} (epoch {self.epoch}); "
            f"training stopped and {kept}. Try a lower --lr (now {self.lr})"
        )
