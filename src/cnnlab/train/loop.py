"""The training loop's parts: the splits, a batch as the model takes it, the optimiser and its schedule, one
epoch of steps, and evaluation summed over the processes. train/run.py puts them together into a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnlab.config import TrainConfig
from cnnlab.data import ImageSet
from cnnlab.data.tensors.batching import InMemoryLoader
from cnnlab.device import autocast
from cnnlab.eager import eager_optimizer
from cnnlab.runs.model import evaluation_sums, model_input
from cnnlab.train.augment import augmented, pipeline
from cnnlab.train.cores import ThreadChooser
from cnnlab.train.distributed import SINGLE, World, all_reduce_min, all_reduce_sum
from cnnlab.train.gradients import GradNormRecorder
from cnnlab.train.plan import Plan


@dataclass
class Splits:
    """uint8 images and int64 labels on the training device; val is empty when val_size is 0."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


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


def make_splits(data: ImageSet, val_size: int, device: torch.device) -> Splits:
    """Hold out the LAST val_size training images for validation (fixed, so every run selects on the same set)."""
    n = len(data.train_images)
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}), got {val_size}")
    cut = n - val_size
    to = lambda t: t.to(device)  # noqa: E731
    return Splits(
        to(data.train_images[:cut]),
        to(data.train_labels[:cut]),
        to(data.train_images[cut:]),
        to(data.train_labels[cut:]),
        to(data.test_images),
        to(data.test_labels),
    )


def prepare_batch(
    images: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator | None = None,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """uint8 batch -> the model's float batch, augmented (train/augment.py) when a generator is given.
    `rows=(first, total)`: the batch is this process's part of a global batch of `total`."""
    return model_input(images, cfg, pipeline(cfg, generator, rows) if generator is not None else None)


def training_note(cfg: TrainConfig) -> str:
    """How the training figures differ from the held-out ones, for the curves' legend."""
    notes = (("augmented", augmented(cfg)), ("label-smoothed loss", cfg.label_smoothing),
             ("val/test on images and mirror images", cfg.tta_hflip))
    return ", ".join(n for n, on in notes if on)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return eager_optimizer(torch.optim.SGD)(
            model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if cfg.optimizer == "adamw":
        return eager_optimizer(torch.optim.AdamW)(
            model.parameters(), lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay
        )
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose from sgd, adamw")


def _short_run_warmup(total: int) -> int:
    """The warm-up a run of `total` steps gets at most: 15% of it, but no fewer than 150 steps (or half the
    run): with 40-80 warm-up steps, inception_net (no batch norm) diverged at lr 0.05 in a 25 s budget."""
    return max(round(0.15 * total), min(150, round(0.5 * total)))


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, plan: Plan):
    """A per-step LambdaLR: constant, or one-cycle (linear warm-up to the peak, linear decay to zero at
    the plan's last step). It reads plan.total_steps on every step, so a revised plan is followed."""
    if cfg.schedule == "constant":
        factor = lambda step: 1.0  # noqa: E731
    elif cfg.schedule == "onecycle":

        def factor(step: int) -> float:
            total = plan.total_steps
            warmup = max(1, min(round(cfg.warmup_epochs * plan.steps_per_epoch), _short_run_warmup(total)))
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; choose from constant, onecycle")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(
    model: nn.Module,
    loader: InMemoryLoader,
    optimizer: torch.optim.Optimizer,
    schedule,
    cfg: TrainConfig,
    generator: torch.Generator,
    bar: tqdm | None = None,
    plan: Plan | None = None,
    epoch: int = 1,
    amp_dtype: torch.dtype | None = None,
    grad_recorder: GradNormRecorder | None = None,
    world: World = SINGLE,
    watch: Callable[[int, float], bool] | None = None,
    position: EpochPosition | None = None,
    save: Callable[[int, torch.Tensor], None] | None = None,
    cores: ThreadChooser | None = None,
) -> tuple[float, float, int]:
    """One pass over the training split, or the part of it the plan gives epoch `epoch`.

    Returns (mean loss, accuracy, steps taken), over all processes of a data-parallel run. Syncs with
    the host only every cfg.log_every steps, to update the progress bar and to stop at a loss that is
    no longer finite (naming the first such step), and once more when a time budget times its first steps.
    `watch(step, loss)`, called then with the run's step count and this process's mean loss since the last
    call, may end the run at that step by returning True (train/events.py; the plan then stops there).
    `position`: where the epoch starts (a checkpoint's place within it; None: its first step). `save(steps,
    sums)`, called at the same moments with the epoch's steps so far and this process's running sums, may
    write a checkpoint within the epoch. `cores`, told of every step, fits the CPU threads to the free cores.
    """
    plan = plan or Plan(len(loader), epoch)  # without a plan: the whole pass
    model.train()
    device = loader.images.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    position = position or EpochPosition(generator.get_state(), optimizer.param_groups[0]["lr"])
    sums = torch.zeros(3, dtype=torch.float64) if position.sums is None else position.sums
    loss_sum, correct = sums[0].clone().to(device), sums[1].clone().to(device)
    no_bad_step = torch.iinfo(torch.int64).max
    first_bad = torch.full((), no_bad_step, dtype=torch.int64, device=device)
    seen, steps = int(sums[2]), position.step
    watched = (loss_sum.item(), seen)  # loss sum and images at the last watch call
    first_step = (epoch - 1) * len(loader)
    # This process's part of each global batch, and the weight that makes DDP's mean of the per-process
    # gradients the gradient of the whole batch when the parts differ in size (1 when they do not).
    first_row, part_rows = loader.part or (0, loader.batch_size)
    weight = part_rows * world.world_size / loader.batch_size
    rows = (first_row, loader.batch_size)

    def check_finite() -> None:
        bad = all_reduce_min(first_bad.clone(), world).item()
        if bad != no_bad_step:
            raise NonFiniteLoss(epoch, bad, cfg.lr)

    generator.set_state(position.rng_at_start)
    if cores is not None:
        cores.begin_epoch()
    for images, labels in loader.batches(position.step, position.rng_now):
        if steps >= plan.steps_in_epoch(epoch):
            break
        x = prepare_batch(images, cfg, generator, rows)
        with autocast(device, amp_dtype):
            logits = model(x)
        # the loss in float32 at least: autocast's bfloat16 logits are widened, float64 ones kept
        loss = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), labels, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        (loss if weight == 1 else loss * weight).backward()
        if grad_recorder is not None:
            grad_recorder.step()
        if cfg.grad_clip > 0:  # no host sync: the norm stays a tensor
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
        optimizer.step()
        schedule.step()
        steps += 1
        loss = loss.detach()
        first_bad = torch.where(torch.isfinite(loss) | (first_bad != no_bad_step), first_bad, first_step + steps)
        loss_sum += loss * len(labels)
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += len(labels)
        plan.after_step(first_step + steps, sync)
        if cores is not None:
            cores.step()
        if steps % cfg.log_every == 0:
            check_finite()
            if bar is not None or watch is not None:
                total = loss_sum.item()
            if bar is not None:
                bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
            if watch is not None:
                recent = (total - watched[0]) / (seen - watched[1])
                watched = (total, seen)
                if watch(first_step + steps, recent):
                    plan.stop(first_step + steps)
            if save is not None:
                save(steps, torch.stack([loss_sum, correct, torch.tensor(float(seen), dtype=torch.float64, device=device)]))
        if bar is not None:
            bar.total = plan.steps_in_epoch(epoch)  # a time budget may revise it
            bar.update(1)
    if steps == 0:
        raise ValueError("the training split is smaller than one batch")
    check_finite()
    totals = all_reduce_sum(torch.stack([loss_sum, correct, torch.tensor(float(seen), dtype=torch.float64, device=device)]), world)
    loss_total, correct_total, seen_total = totals.tolist()
    return loss_total / seen_total, correct_total / seen_total, steps


# The attribute that carries a stopped run's directory on the exception that stopped it (see progress.mark_stop).
STOPPED_RUN = "cnnlab_run_dir"


class NonFiniteLoss(FloatingPointError):
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


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, world: World = SINGLE
) -> tuple[float, float]:
    """(cross-entropy loss, accuracy) on a split; NaNs for an empty split. In a data-parallel run each
    process evaluates its part of the split and the sums are added up over all of them."""
    if len(images) == 0:
        return float("nan"), float("nan")
    part = world.split_part(len(images))
    loss_sum, correct, n = all_reduce_sum(evaluation_sums(model, images[part], labels[part], cfg), world).tolist()
    return loss_sum / n, correct / n


