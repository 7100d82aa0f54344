"""What a run trains with, built from its spec and its data: the splits on the device, the network (and its
DistributedDataParallel wrapper, and the average of its weights), the loader, the augmentation, the plan, the
optimiser and its schedule.

`build_parts` loads nothing, starts nothing and prints nothing: it seeds torch's generator (the weights are drawn
from it, as in any torch script) and builds. The run (train/run.py) calls it for a fresh run and a resumed one
alike, and the benchmarks call it to time the very steps a run takes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from cnnlab.config import RunSpec, TrainConfig, for_data
from cnnlab.data import ImageSet
from cnnlab.data.tensors.batching import InMemoryLoader
from cnnlab.device import training_dtype
from cnnlab.eager import eager_optimizer
from cnnlab.models import models_with_branches
from cnnlab.train import distributed
from cnnlab.train.augment import pipeline
from cnnlab.train.average import WeightAverage
from cnnlab.train.distributed import World
from cnnlab.train.gradients import GradNormRecorder, inception_branch_groups
from cnnlab.train.plan import BudgetPlan, Plan


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
class Parts:
    """A run's working parts, as a fresh run builds them (a resume then fills them from its checkpoint)."""

    cfg: TrainConfig  # the run's config once its data are known (config.for_data), as config.json records it
    note: str | None  # what was chosen from the data and why (config.fit_note); None for a resumed run
    world: World
    device: torch.device
    classes: tuple[str, ...]
    splits: Splits
    model: nn.Module  # the network itself (evaluation and checkpoints)
    trained: nn.Module  # what the steps run: the network, or its DistributedDataParallel wrapper
    model_kwargs: dict[str, int]  # in_channels, num_classes, image_size
    loader: InMemoryLoader
    generator: torch.Generator  # permutations and augmentation
    augment: Callable[[torch.Tensor], torch.Tensor] | None  # this process's rows of each batch's augmentation
    plan: Plan
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    recorder: GradNormRecorder | None  # the Inception branches' gradient norms (--record-branch-grads)
    amp_dtype: torch.dtype | None
    average: WeightAverage | None = None  # the average of the weights (--ema), updated after every step

    @property
    def kept(self) -> nn.Module:
        """The network the run evaluates, selects and saves as its model: the average of the weights when the run
        keeps one, else the network itself."""
        return self.average.model if self.average is not None else self.model


def build_parts(spec: RunSpec, data: ImageSet, world: World, device: torch.device, t_start: float,
                recorded: TrainConfig | None = None, total_steps: int | None = None) -> Parts:
    """Everything a run trains with. `recorded`: a resumed run's config, kept as it is (only an image folder's place
    is recorded anew); `total_steps`: the length a resumed time-budget run had planned. `t_start`: when the run
    began (perf_counter), the start of a time budget."""
    cfg, note = for_data(spec, data) if recorded is None else (_recorded_config(spec, recorded, data), None)
    splits = make_splits(data, cfg.val_size, device)
    torch.manual_seed(cfg.seed)
    model_kwargs = dict(in_channels=1 if splits.train_x.dim() == 3 else splits.train_x.shape[1],
                        num_classes=len(data.classes), image_size=int(splits.train_x.shape[-1]))
    model = spec.model.create(cfg.block, **model_kwargs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    loader = _loader(cfg, splits, world, generator)
    first_row = loader.part[0] if loader.part else 0
    plan = _plan(cfg, splits, loader, world, t_start, total_steps)
    optimizer = build_optimizer(model, cfg)
    return Parts(
        cfg=cfg, note=note,
        world=world, device=device, classes=tuple(data.classes), splits=splits, model=model,
        trained=distributed.wrap(model, world, device), model_kwargs=model_kwargs, loader=loader, generator=generator,
        augment=pipeline(cfg, generator, (first_row, loader.batch_size)), plan=plan, optimizer=optimizer,
        schedule=build_schedule(optimizer, cfg, plan), recorder=_recorder(cfg, model),
        amp_dtype=training_dtype(device, cfg.amp), average=WeightAverage(model, cfg.ema) if cfg.ema > 0 else None,
    )


def _recorded_config(spec: RunSpec, cfg: TrainConfig, data: ImageSet) -> TrainConfig:
    """A resumed run keeps its config; an image folder's place is recorded anew (--data-dir may have named where
    it moved)."""
    return replace(cfg, dataset=data.name, data_dir=None) if spec.dataset.entry.takes_path else cfg


def make_splits(data: ImageSet, val_size: int, device: torch.device) -> Splits:
    """Hold out the LAST val_size training images for validation (fixed, so every run selects on the same set)."""
    n = len(data.train_images)
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}), got {val_size}")
    cut = n - val_size
    return Splits(data.train_images[:cut].to(device), data.train_labels[:cut].to(device),
                  data.train_images[cut:].to(device), data.train_labels[cut:].to(device),
                  data.test_images.to(device), data.test_labels.to(device))


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return eager_optimizer(torch.optim.SGD)(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
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


def _loader(cfg: TrainConfig, splits: Splits, world: World, generator: torch.Generator) -> InMemoryLoader:
    part = world.batch_part(cfg.batch_size) if world.distributed else None
    loader = InMemoryLoader(splits.train_x, splits.train_y, cfg.batch_size, shuffle=True, drop_last=True,
                            generator=generator, part=part)
    if len(loader) == 0:
        raise ValueError(
            f"the training split ({len(splits.train_x)} images, after {len(splits.val_x)} held out for validation) "
            f"is smaller than one batch ({cfg.batch_size}); choose a smaller --batch-size"
        )
    side = min(splits.train_x.shape[-2:])
    if cfg.cutout >= side:
        raise ValueError(f"cutout must be smaller than the images ({side} pixels a side), got {cfg.cutout}")
    return loader


def _plan(cfg: TrainConfig, splits: Splits, loader: InMemoryLoader, world: World, t_start: float,
          total_steps: int | None) -> Plan:
    """The run's length: its epochs, its steps, or its time budget; a resumed run the length it had planned."""
    if total_steps is not None:
        return Plan(len(loader), total_steps=total_steps)
    if cfg.time_budget > 0:
        plan = BudgetPlan(len(loader), cfg.batch_size, cfg.time_budget, t_start, len(splits.val_x) + len(splits.test_x))
        plan.agree = lambda n: distributed.broadcast_object(n, world)  # rank 0's clock decides
        return plan
    if cfg.steps > 0:
        return Plan(len(loader), total_steps=cfg.steps)
    return Plan(len(loader), cfg.epochs)


def _recorder(cfg: TrainConfig, model: nn.Module) -> GradNormRecorder | None:
    if not cfg.record_branch_grads:
        return None
    groups = inception_branch_groups(model)
    if not groups:
        raise ValueError(
            f"recording branch gradients needs a model with Inception blocks ({', '.join(models_with_branches())}); "
            f"{cfg.model} has none"
        )
    return GradNormRecorder(groups)
