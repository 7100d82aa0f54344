"""The training loop: plain functions, read top to bottom."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cnnlab.data import MNIST, load_mnist
from cnnlab.data.batching import InMemoryLoader, normalize, random_affine
from cnnlab.models import count_parameters, create_model
from cnnlab.train.checkpoint import save_checkpoint
from cnnlab.train.config import TrainConfig
from cnnlab.train.gradients import GradNormRecorder, inception_branch_groups
from cnnlab.train.plan import BudgetPlan, Plan
from cnnlab.train.runtime import autocast, autocast_dtype, configure, resolve_device
from cnnlab.train.rundir import append_metrics, make_run_dir, plot_curves, write_json


@dataclass
class Splits:
    """uint8 images and int64 labels on the training device; val is empty when val_size is 0."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def make_splits(data: MNIST, val_size: int, device: torch.device) -> Splits:
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


def prepare_batch(images: torch.Tensor, cfg: TrainConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 batch -> normalised float batch, augmented when a generator is given."""
    augment = None
    if generator is not None and (cfg.max_shift or cfg.max_rotate or cfg.max_scale):
        augment = lambda x: random_affine(x, generator, cfg.max_shift, cfg.max_rotate, cfg.max_scale)  # noqa: E731
    x = normalize(images, augment=augment)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(
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
) -> tuple[float, float, int]:
    """One pass over the training split, or the part of it the plan gives epoch `epoch`.

    Returns (mean loss, accuracy, steps taken). Syncs with the host only every cfg.log_every steps,
    to update the progress bar (and once more when a time budget times its first steps).
    """
    plan = plan or Plan(len(loader), epoch)  # without a plan: the whole pass
    model.train()
    device = loader.images.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = steps = 0
    first_step = (epoch - 1) * len(loader)
    for images, labels in loader:
        if steps >= plan.steps_in_epoch(epoch):
            break
        x = prepare_batch(images, cfg, generator)
        with autocast(device, amp_dtype):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_recorder is not None:
            grad_recorder.step()
        optimizer.step()
        schedule.step()
        loss_sum += loss.detach() * len(labels)
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += len(labels)
        steps += 1
        plan.after_step(first_step + steps, sync)
        if bar is not None:
            bar.total = plan.steps_in_epoch(epoch)  # a time budget may revise it
            bar.update(1)
            if steps % cfg.log_every == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", refresh=False)
    if seen == 0:
        raise ValueError("the training split is smaller than one batch")
    return loss_sum.item() / seen, correct.item() / seen, steps


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Float32 logits for uint8 images, in batches of cfg.eval_batch_size, without gradients."""
    model.eval()
    amp_dtype = autocast_dtype(images.device, cfg.amp)
    out = []
    for i in range(0, len(images), cfg.eval_batch_size):
        with autocast(images.device, amp_dtype):
            out.append(model(prepare_batch(images[i : i + cfg.eval_batch_size], cfg)).float())
    return torch.cat(out) if out else torch.empty(0, model.num_classes)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig) -> tuple[float, float]:
    """(cross-entropy loss, accuracy) on a split; NaNs for an empty split."""
    if len(images) == 0:
        return float("nan"), float("nan")
    logits = predict_logits(model, images, cfg)
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, acc


@dataclass
class RunResult:
    """What a finished run reports; also written to summary.json."""

    run_dir: Path
    model: str
    recipe: str
    parameters: int
    epochs: int
    best_epoch: int  # chosen by validation accuracy (or the last epoch when there is no validation split)
    best_val_acc: float
    test_acc: float  # at best_epoch
    final_test_acc: float
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "history"}
        d["run_dir"] = str(self.run_dir)
        return d


def fit(
    cfg: TrainConfig,
    data: MNIST | None = None,
    out_root: str | Path = "runs",
    progress: bool = True,
) -> RunResult:
    """Train cfg.model under cfg, write the run directory, and return the result.

    The test set is evaluated after every epoch for the record, but the reported model (best.pt) is
    the epoch with the best validation accuracy: the test set never chooses anything.
    """
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    configure(device, cfg.threads)
    amp_dtype = autocast_dtype(device, cfg.amp)
    if data is None:
        data = load_mnist(cfg.data_dir, progress=progress)
    splits = make_splits(data, cfg.val_size, device)

    torch.manual_seed(cfg.seed)
    in_channels = 1 if splits.train_x.dim() == 3 else splits.train_x.shape[1]
    model_kwargs = dict(in_channels=in_channels, num_classes=10, image_size=int(splits.train_x.shape[-1]))
    model = create_model(cfg.model, **model_kwargs)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_params = count_parameters(model)

    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    loader = InMemoryLoader(splits.train_x, splits.train_y, cfg.batch_size, shuffle=True, drop_last=True, generator=gen)
    if len(loader) == 0:
        raise ValueError(f"the training split ({len(splits.train_x)} images) is smaller than one batch ({cfg.batch_size})")
    if cfg.time_budget > 0:
        eval_images = len(splits.val_x) + len(splits.test_x)
        plan: Plan = BudgetPlan(len(loader), cfg.batch_size, cfg.time_budget, t_start, eval_images)
    else:
        plan = Plan(len(loader), cfg.epochs)
    optimizer = build_optimizer(model, cfg)
    schedule = build_schedule(optimizer, cfg, plan)
    recorder = None
    if cfg.record_branch_grads:
        groups = inception_branch_groups(model)
        if not groups:
            raise ValueError(f"recording branch gradients needs a model with Inception blocks; {cfg.model} has none")
        recorder = GradNormRecorder(groups)
    branch_grads: list[dict[str, Any]] = []

    run_dir = make_run_dir(out_root, cfg.model)
    write_json(run_dir / "config.json", cfg.to_dict())

    history: list[dict[str, Any]] = []
    best_val, best_epoch, best_test = -1.0, 0, float("nan")
    has_val = cfg.val_size > 0
    epoch = steps_done = 0
    while epoch < plan.epochs:
        epoch += 1
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        of = "?" if cfg.time_budget > 0 else str(plan.epochs)
        bar = tqdm(total=plan.steps_in_epoch(epoch), desc=f"{cfg.model} {epoch}/{of}", leave=False, disable=not progress, unit="step")
        train_loss, train_acc, steps = train_one_epoch(
            model, loader, optimizer, schedule, cfg, gen, bar, plan, epoch, amp_dtype, recorder
        )
        bar.close()
        steps_done += steps
        train_seconds = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"the training loss became {train_loss} in epoch {epoch}; lower --lr (now {cfg.lr})"
            )
        val_loss, val_acc = evaluate(model, splits.val_x, splits.val_y, cfg)
        test_loss, test_acc = evaluate(model, splits.test_x, splits.test_y, cfg)
        plan.after_epoch(epoch, steps_done, train_seconds, time.perf_counter() - t0 - train_seconds)
        row = dict(
            epoch=epoch,
            steps=steps_done,
            train_loss=train_loss,
            train_acc=train_acc,
            val_loss=val_loss if has_val else None,
            val_acc=val_acc if has_val else None,
            test_loss=test_loss,
            test_acc=test_acc,
            lr=lr,
            seconds=time.perf_counter() - t0,
            elapsed=time.perf_counter() - t_start,
            time=time.time(),
        )
        history.append(row)
        append_metrics(run_dir / "metrics.csv", row)
        if recorder is not None:
            branch_grads.append({"epoch": epoch, "steps": recorder.steps, "mean_squared_norm": recorder.mean()})
            recorder.reset()
            write_json(run_dir / "branch_grads.json", {"model": cfg.model, "epochs": branch_grads})

        # Selection: best validation accuracy, ties to the later (longer-trained) epoch; without a
        # validation split (the course), the last epoch.
        score = val_acc if has_val else float(epoch)
        state = _state(model, model_kwargs, optimizer, schedule, gen, cfg, epoch, row, plan)
        if score >= best_val:
            best_val, best_epoch, best_test = score, epoch, test_acc
            save_checkpoint(run_dir / "best.pt", state)
        save_checkpoint(run_dir / "last.pt", state)
        if progress:
            v = f"val {100 * val_acc:.2f}%  " if has_val else ""
            if cfg.time_budget > 0:
                of = f"{steps_done / len(loader):.2f}/{plan.total_steps / len(loader):.2f}"
            else:
                of = f"{epoch:>2}/{plan.epochs}"
            tqdm.write(
                f"{cfg.model} epoch {of}  loss {train_loss:.4f}  train {100 * train_acc:.2f}%  "
                f"{v}test {100 * test_acc:.2f}%  {row['seconds']:.1f}s"
            )

    if recorder is not None:
        recorder.close()
    result = RunResult(
        run_dir=run_dir,
        model=cfg.model,
        recipe=cfg.recipe,
        parameters=n_params,
        epochs=epoch,
        best_epoch=best_epoch,
        best_val_acc=best_val if has_val else float("nan"),
        test_acc=best_test,
        final_test_acc=history[-1]["test_acc"],
        train_seconds=time.perf_counter() - t_start,
        history=history,
    )
    write_json(run_dir / "summary.json", _json_safe(result.summary()))
    note = ", ".join(
        n for n, on in (("augmented", cfg.max_shift or cfg.max_rotate or cfg.max_scale), ("label-smoothed loss", cfg.label_smoothing)) if on
    )
    plot_curves(history_as_floats(history), run_dir / "curves.png", f"{cfg.model} ({cfg.recipe} recipe)", note)
    return result


def history_as_floats(history: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{k: float("nan") if v is None else float(v) for k, v in r.items()} for r in history]


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _state(model, model_kwargs, optimizer, schedule, gen, cfg, epoch: int, row: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """Everything needed to evaluate or resume: weights, config, optimiser, schedule, epoch, RNG states."""
    return {
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_kwargs": model_kwargs,
        "config": cfg.to_dict(),
        "optimizer_state": optimizer.state_dict(),
        "schedule_state": schedule.state_dict(),
        "epoch": epoch,
        "total_steps": plan.total_steps,
        "metrics": {k: v for k, v in row.items() if v is not None},
        "rng": {"torch": torch.get_rng_state(), "generator": gen.get_state().cpu()},
    }
