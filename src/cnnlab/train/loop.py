"""The training loop: plain functions, read top to bottom."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal, Union

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cnnlab.data import MNIST
from cnnlab.data.imagefolder import is_imagefolder
from cnnlab.data.batching import InMemoryLoader, cutout, random_affine
from cnnlab.models import count_parameters, create_model
from cnnlab.train import distributed
from cnnlab.config import TrainConfig
from cnnlab.runs.checkpoint import CheckpointError, checkpoint_dir, load_checkpoint, save_checkpoint
from cnnlab.runs.model import evaluation_sums, model_input, training_data
from cnnlab.train.distributed import SINGLE, World, all_reduce_min, all_reduce_sum
from cnnlab.train.gradients import GradNormRecorder, inception_branch_groups
from cnnlab.train.plan import BudgetPlan, Plan
from cnnlab.device import autocast, autocast_dtype, resolve_device
from cnnlab.train.runtime import configure
from cnnlab.runs.rundir import RunDirLock, append_metrics, make_run_dir, plot_curves, write_json, write_metrics


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


def prepare_batch(
    images: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator | None = None,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """uint8 batch -> normalised float batch, augmented when a generator is given. `rows=(first, total)`:
    the batch is this process's part of a global batch of `total` (see random_affine)."""
    augment = None
    if generator is not None and (cfg.max_shift or cfg.max_rotate or cfg.max_scale or cfg.hflip or cfg.cutout):
        def augment(x: torch.Tensor) -> torch.Tensor:
            x = random_affine(x, generator, cfg.max_shift, cfg.max_rotate, cfg.max_scale, rows, cfg.hflip)
            return cutout(x, generator, cfg.cutout, rows)
    return model_input(images, cfg, augment)


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
    world: World = SINGLE,
) -> tuple[float, float, int]:
    """One pass over the training split, or the part of it the plan gives epoch `epoch`.

    Returns (mean loss, accuracy, steps taken), over all processes of a data-parallel run. Syncs with
    the host only every cfg.log_every steps, to update the progress bar and to stop at a loss that is
    no longer finite (naming the first such step), and once more when a time budget times its first steps.
    """
    plan = plan or Plan(len(loader), epoch)  # without a plan: the whole pass
    model.train()
    device = loader.images.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    no_bad_step = torch.iinfo(torch.int64).max
    first_bad = torch.full((), no_bad_step, dtype=torch.int64, device=device)
    seen = steps = 0
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

    for images, labels in loader:
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
        optimizer.step()
        schedule.step()
        steps += 1
        loss = loss.detach()
        first_bad = torch.where(torch.isfinite(loss) | (first_bad != no_bad_step), first_bad, first_step + steps)
        loss_sum += loss * len(labels)
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += len(labels)
        plan.after_step(first_step + steps, sync)
        if steps % cfg.log_every == 0:
            check_finite()
            if bar is not None:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", refresh=False)
        if bar is not None:
            bar.total = plan.steps_in_epoch(epoch)  # a time budget may revise it
            bar.update(1)
    if steps == 0:
        raise ValueError("the training split is smaller than one batch")
    check_finite()
    totals = all_reduce_sum(torch.stack([loss_sum, correct, torch.tensor(float(seen), dtype=torch.float64, device=device)]), world)
    loss_total, correct_total, seen_total = totals.tolist()
    return loss_total / seen_total, correct_total / seen_total, steps


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch, the run's step and, once the
    run has marked it (see stop_advice), the run directory."""

    def __init__(self, epoch: int, step: int, lr: float) -> None:
        super().__init__(epoch, step, lr)
        self.epoch, self.step, self.lr = epoch, step, lr

    def __str__(self) -> str:
        run_dir = getattr(self, _STOPPED_RUN, None)
        kept = f" in {run_dir}" if run_dir is not None else ""
        return (
            f"the training loss stopped being a finite number at step {self.step} (epoch {self.epoch}); "
            f"training stopped and the checkpoints of earlier epochs are kept{kept}. Try a lower --lr (now {self.lr})"
        )


# The attribute that carries a stopped run's directory on the exception that stopped it.
_STOPPED_RUN = "cnnlab_run_dir"


def _mark_stop(run_dir: Path) -> Callable[..., bool]:
    """An ExitStack exit callback that marks an exception leaving the run with the run's directory."""

    def mark(exc_type, exc, tb) -> bool:
        if exc is not None and getattr(exc, _STOPPED_RUN, None) is None:
            setattr(exc, _STOPPED_RUN, run_dir)
        return False  # never swallows the exception

    return mark


def stop_advice(exc: BaseException) -> list[str]:
    """What to tell the user about the run that `exc` stopped (Ctrl-C, a lost peer, any error): where its
    directory is and the command that continues it. Empty when `exc` came before the directory existed, and
    for a loss that stopped being finite: its own message names the directory, and resuming would only
    repeat the same steps."""
    run_dir = getattr(exc, _STOPPED_RUN, None)
    if run_dir is None or isinstance(exc, NonFiniteLoss):
        return []
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


def _say(mode: str, line: str) -> None:
    if mode == "bar":
        tqdm.write(line)  # above a bar that is still drawn
    elif mode == "lines":
        print(line, flush=True)  # a log file shows each line as it happens


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
    network: nn.Module | None = field(default=None, repr=False)  # the trained model (last epoch), for library users
    model_kwargs: dict[str, int] = field(default_factory=dict)  # in_channels, num_classes, image_size

    def summary(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("history", "network")}
        d["run_dir"] = str(self.run_dir)
        return d


def fit(
    cfg: TrainConfig,
    data: MNIST | None = None,
    out_root: str | Path = "runs",
    progress: Progress = True,
) -> RunResult:
    """Train cfg.model under cfg, write a new run directory under out_root, and return the result.

    The test set is evaluated after every epoch for the record, but the reported model (best.pt) is
    the epoch with the best validation accuracy: the test set never chooses anything. Started by
    torchrun, every process calls this and the run is data-parallel (see train/distributed.py).
    `progress`: see progress_mode; only the first process prints.
    """
    return _run(cfg, data, progress, out_root=Path(out_root))


def resume(
    run_dir: str | Path,
    data: MNIST | None = None,
    progress: Progress = True,
    device: str | None = None,
    threads: int | None = None,
    data_dir: str | None = None,
) -> RunResult:
    """Continue the run in run_dir from its last.pt (the end of its last finished epoch), with the settings
    it was started with. A CPU run that is resumed ends with the same weights, bit for bit, as one that never
    stopped; a run may be resumed by a different number of processes. A time-budget run resumes to the
    step count it had planned. Only where it runs (device, threads, data directory) may change; for a run
    on an image folder, data_dir is the folder's new place if it has moved."""
    run_dir = checkpoint_dir(run_dir)
    last = run_dir / "last.pt"
    if not last.exists():
        raise CheckpointError(f"{run_dir} has no last.pt to resume from (is it a cnnlab run directory?)")
    state = load_checkpoint(last)
    missing = [k for k in _RESUME_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{last} was written by an older cnnlab and cannot be resumed (no {', '.join(missing)})")
    cfg = TrainConfig.from_dict(state["config"])
    changes = {k: v for k, v in dict(device=device, threads=threads, data_dir=data_dir).items() if v is not None}
    return _run(replace(cfg, **changes), data, progress, run_dir=run_dir, state=state)


_RESUME_KEYS = ("optimizer_state", "schedule_state", "rng", "steps", "history", "best")


def config_for_data(cfg: TrainConfig, data: MNIST) -> TrainConfig:
    """A new run's config once its data are loaded: the data decide what it is trained on (an image folder's
    absolute path), how it is standardised, an image folder's size, and how many images are held out."""
    cfg = replace(cfg, dataset=data.name, norm_mean=data.mean, norm_std=data.std)
    if is_imagefolder(data.name):  # recorded, so that evaluate and resume rebuild the same split and size
        cfg = replace(cfg, image_size=int(data.train_images.shape[-1]))
    if cfg.val_size >= len(data.train_images) // 2:
        # MNIST's 5,000 held-out images would be most of a small folder: hold out a tenth instead.
        cfg = replace(cfg, val_size=len(data.train_images) // 10)
    return cfg


def _run(
    cfg: TrainConfig,
    data: MNIST | None,
    progress: Progress,
    out_root: Path | None = None,
    run_dir: Path | None = None,
    state: dict[str, Any] | None = None,
) -> RunResult:
    with contextlib.ExitStack() as cleanup:
        return _train(cfg, data, progress, cleanup, out_root, run_dir, state)


def _train(
    cfg: TrainConfig,
    data: MNIST | None,
    progress: Progress,
    cleanup: contextlib.ExitStack,
    out_root: Path | None,
    run_dir: Path | None,
    state: dict[str, Any] | None,
) -> RunResult:
    t_start = time.perf_counter()
    world, device = distributed.init(resolve_device(cfg.device))
    main = world.is_main
    mode = progress_mode(progress) if main else "off"
    if state is not None and main:  # before touching anything: the run may still be going
        assert run_dir is not None
        cleanup.callback(RunDirLock(run_dir).release)
    configure(device, cfg.threads)
    amp_dtype = autocast_dtype(device, cfg.amp)
    if data is None:
        with distributed.local_main_first(world):  # one fetch into each machine's cache
            data = training_data(cfg, cfg.data_dir, progress=mode == "bar", recorded=state is not None)
    if state is None:
        cfg = config_for_data(cfg, data)
    elif is_imagefolder(data.name):  # records where the folder is now: --data-dir may have named its new place
        cfg = replace(cfg, dataset=data.name, data_dir=None)
    splits = make_splits(data, cfg.val_size, device)

    torch.manual_seed(cfg.seed)
    in_channels = 1 if splits.train_x.dim() == 3 else splits.train_x.shape[1]
    model_kwargs = dict(in_channels=in_channels, num_classes=len(data.classes), image_size=int(splits.train_x.shape[-1]))
    model = create_model(cfg.model, **model_kwargs)
    if state is not None:
        model.load_state_dict(state["model_state"])
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_params = count_parameters(model)

    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    part = world.batch_part(cfg.batch_size) if world.distributed else None
    loader = InMemoryLoader(
        splits.train_x, splits.train_y, cfg.batch_size, shuffle=True, drop_last=True, generator=gen, part=part
    )
    if len(loader) == 0:
        raise ValueError(
            f"the training split ({len(splits.train_x)} images, after {len(splits.val_x)} held out for validation) "
            f"is smaller than one batch ({cfg.batch_size}); choose a smaller --batch-size"
        )
    side = min(splits.train_x.shape[-2:])
    if cfg.cutout >= side:
        raise ValueError(f"cutout must be smaller than the images ({side} pixels a side), got {cfg.cutout}")
    if state is not None:
        if state.get("steps_per_epoch", len(loader)) != len(loader):
            raise CheckpointError(
                f"the run trained on {state['steps_per_epoch']} batches per epoch, but this data set gives "
                f"{len(loader)}: it can only be resumed on the data it started with"
            )
        plan = Plan(len(loader), total_steps=state["total_steps"])
    elif cfg.time_budget > 0:
        eval_images = len(splits.val_x) + len(splits.test_x)
        plan = BudgetPlan(len(loader), cfg.batch_size, cfg.time_budget, t_start, eval_images)
        plan.agree = lambda n: distributed.broadcast_object(n, world)  # rank 0's clock decides
    elif cfg.steps > 0:
        plan = Plan(len(loader), total_steps=cfg.steps)
    else:
        plan = Plan(len(loader), cfg.epochs)
    optimizer = build_optimizer(model, cfg)
    schedule = build_schedule(optimizer, cfg, plan)
    recorder = None
    if cfg.record_branch_grads:
        groups = inception_branch_groups(model)
        if not groups:
            from cnnlab.models import models_with_branches

            raise ValueError(
                f"recording branch gradients needs a model with Inception blocks ({', '.join(models_with_branches())}); "
                f"{cfg.model} has none"
            )
        recorder = GradNormRecorder(groups)
    branch_grads: list[dict[str, Any]] = []
    ddp_model = distributed.wrap(model, world, device)

    history: list[dict[str, Any]] = []
    best = {"val": -1.0, "epoch": 0, "test": float("nan")}
    epoch = steps_done = 0
    elapsed_before = 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer_state"])
        schedule.load_state_dict(state["schedule_state"])
        gen.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        epoch, steps_done = state["epoch"], state["steps"]
        history, best = list(state["history"]), dict(state["best"])
        branch_grads = list(state.get("branch_grads", []))
        elapsed_before = history[-1]["elapsed"] if history else 0.0
        if main:
            assert run_dir is not None
            for tmp in run_dir.glob(".*.tmp"):  # what a killed run was writing when it stopped
                tmp.unlink(missing_ok=True)
            write_metrics(run_dir / "metrics.csv", history)  # drops rows written after the checkpoint
    elif main:
        assert out_root is not None
        run_dir = make_run_dir(out_root, cfg.model)
        cleanup.callback(RunDirLock(run_dir).release)
    if main:  # a resumed run's too: an image folder's new place, the device it now runs on
        write_json(run_dir / "config.json", cfg.to_dict())
    run_dir = Path(distributed.broadcast_object(str(run_dir), world))
    cleanup.push(_mark_stop(run_dir))
    _say(mode, f"{cfg.model}: resuming {run_dir} after epoch {epoch}" if state else f"{cfg.model}: run directory {run_dir}")

    has_val = cfg.val_size > 0
    while epoch < plan.epochs:
        epoch += 1
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        of = "?" if cfg.time_budget > 0 and state is None else str(plan.epochs)
        bar = tqdm(total=plan.steps_in_epoch(epoch), desc=f"{cfg.model} {epoch}/{of}", leave=False,
                   disable=mode != "bar", unit="step")
        with bar:  # closed (its line cleared) however the epoch ends, so no message lands on a half-drawn bar
            train_loss, train_acc, steps = train_one_epoch(
                ddp_model, loader, optimizer, schedule, cfg, gen, bar, plan, epoch, amp_dtype, recorder, world
            )
        steps_done += steps
        train_seconds = time.perf_counter() - t0
        val_loss, val_acc = evaluate(model, splits.val_x, splits.val_y, cfg, world)
        test_loss, test_acc = evaluate(model, splits.test_x, splits.test_y, cfg, world)
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
            elapsed=elapsed_before + time.perf_counter() - t_start,
            time=time.time(),
        )
        history.append(row)
        if recorder is not None:
            branch_grads.append({"epoch": epoch, "steps": recorder.steps, "mean_squared_norm": recorder.mean()})
            recorder.reset()
        # Selection: best validation accuracy, ties to the later (longer-trained) epoch; without a
        # validation split (the course), the last epoch.
        score = val_acc if has_val else float(epoch)
        is_best = score >= best["val"]
        if is_best:
            best = {"val": score, "epoch": epoch, "test": test_acc}
        if not main:
            continue
        # The order matters for a run killed in between: resume starts from last.pt and rewrites
        # metrics.csv from it, so last.pt is written last.
        append_metrics(run_dir / "metrics.csv", row)
        if recorder is not None:
            write_json(run_dir / "branch_grads.json", {"model": cfg.model, "epochs": branch_grads})
        ckpt = _state(model, model_kwargs, optimizer, schedule, gen, cfg, epoch, row, plan)
        ckpt.update(
            steps=steps_done, steps_per_epoch=len(loader), history=history, best=best, branch_grads=branch_grads,
            world_size=world.world_size, classes=list(data.classes),
        )
        if is_best:
            save_checkpoint(run_dir / "best.pt", ckpt)
        save_checkpoint(run_dir / "last.pt", ckpt)
        if mode != "off":
            v = f"val {100 * val_acc:.2f}%  " if has_val else ""
            if cfg.time_budget > 0:
                of = f"{steps_done / len(loader):.2f}/{plan.total_steps / len(loader):.2f}"
            else:
                of = f"{epoch:>2}/{plan.epochs}"
            _say(mode,
                 f"{cfg.model} epoch {of}  loss {train_loss:.4f}  train {100 * train_acc:.2f}%  "
                 f"{v}test {100 * test_acc:.2f}%  {row['seconds']:.1f}s")

    if recorder is not None:
        recorder.close()
    result = RunResult(
        run_dir=run_dir,
        model=cfg.model,
        recipe=cfg.recipe,
        parameters=n_params,
        epochs=epoch,
        best_epoch=best["epoch"],
        best_val_acc=best["val"] if has_val else float("nan"),
        test_acc=best["test"],
        final_test_acc=history[-1]["test_acc"],
        train_seconds=elapsed_before + time.perf_counter() - t_start,
        history=history,
        network=model,
        model_kwargs=model_kwargs,
    )
    if main:
        write_json(run_dir / "summary.json", _json_safe(result.summary()))
        note = ", ".join(
            n for n, on in (
                ("augmented", cfg.max_shift or cfg.max_rotate or cfg.max_scale or cfg.hflip or cfg.cutout),
                ("label-smoothed loss", cfg.label_smoothing),
                ("val/test on images and mirror images", cfg.tta_hflip),
            ) if on
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
