"""One training run, read top to bottom: set up, restore (a resumed run only), train epoch after epoch, finish.

A fresh run and a resumed one differ only at the start: `fit` opens a new run directory, `resume` reopens one and
restores the checkpoint's state into what `set_up` built. From there one loop runs, with no resume branches in it
(nanoGPT's `init_from` is the model). Each process of a data-parallel run calls the same functions; rank 0 alone
writes the run directory.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from cnnlab.config import TrainConfig, fit_note, fit_to_data
from cnnlab.data import ImageSet
from cnnlab.data.tensors.batching import InMemoryLoader
from cnnlab.data.sets.registry import lookup
from cnnlab.device import autocast_dtype, resolve_device
from cnnlab.models import count_parameters, create_model, models_with_branches
from cnnlab.runs.checkpoint import Checkpoint, CheckpointError, load_weights
from cnnlab.runs.model import load_model, training_data
from cnnlab.runs.rundir import (RunDirError, RunDirLock, append_metrics, clear_unstarted, keep_previous, load_run, make_run_dir,
                                plot_curves, remove_partial_writes, remove_unstarted, write_json, write_metrics)
from cnnlab.train import distributed
from cnnlab.train.collapse import collapse_epoch, collapse_warning
from cnnlab.train.cores import ThreadChooser
from cnnlab.train.distributed import World
from cnnlab.train.events import Observer, Observers
from cnnlab.train.gradients import GradNormRecorder, inception_branch_groups
from cnnlab.train.loop import (EpochPosition, Splits, build_optimizer, build_schedule, evaluate, make_splits, train_one_epoch,
                               training_note)
from cnnlab.train.plan import BudgetPlan, Plan
from cnnlab.train.progress import Progress, mark_stop, progress_mode, say
from cnnlab.train.runtime import configure


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
    collapsed_at_epoch: int | None = None  # training ended at chance, from this epoch on (train/collapse.py)
    history: list[dict[str, Any]] = field(default_factory=list)
    network: nn.Module | None = field(default=None, repr=False)  # the trained model (last epoch), for library users
    model_kwargs: dict[str, int] = field(default_factory=dict)  # in_channels, num_classes, image_size
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # the run's TrainConfig, as in config.json
    # the CPU threads this process trained on, in order: one count, unless --adapt-threads changed it with the load
    # (then the same seed repeats only with the same changes at the same steps). Empty on a GPU.
    threads: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("history", "network", "config")}
        d["run_dir"] = str(self.run_dir)
        return d


@dataclass
class Training:
    """A run in progress: what set_up builds, restore fills from a checkpoint, and the epochs advance."""

    cfg: TrainConfig
    world: World
    device: torch.device
    mode: str  # what it prints: "bar", "lines" or "off" (progress.progress_mode); "off" on ranks other than 0
    note: str | None  # what was chosen from the data and why, said when the run starts (config.fit_note)
    classes: tuple[str, ...]
    splits: Splits
    model: nn.Module  # the network itself (evaluation and checkpoints)
    trained: nn.Module  # what the steps run: the network, or its DistributedDataParallel wrapper
    model_kwargs: dict[str, int]
    loader: InMemoryLoader
    generator: torch.Generator  # permutations and augmentation
    plan: Plan
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    recorder: GradNormRecorder | None
    amp_dtype: torch.dtype | None
    t_start: float  # perf_counter at the start of this process's part of the run
    run_dir: Path | None = None
    epoch: int = 0
    steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=lambda: {"val": -1.0, "epoch": 0, "test": float("nan")})
    branch_grads: list[dict[str, Any]] = field(default_factory=list)
    elapsed_before: float = 0.0  # seconds trained before a resume
    position: EpochPosition | None = None  # where the next epoch starts, when a checkpoint within it was resumed
    last_saved: float = 0.0  # time.monotonic() of the last checkpoint (rank 0's clock decides --checkpoint-every)
    observers: Observers = field(default_factory=Observers)  # who watches besides the terminal (train/events.py)
    cores: ThreadChooser | None = None  # CPU runs: threads fitted to the cores other programs leave (train/cores.py)

    @property
    def main(self) -> bool:
        return self.world.is_main


def fit(cfg: TrainConfig, data: ImageSet | None = None, out_root: str | Path = "runs", progress: Progress = True,
        observers: Sequence[Observer] = ()) -> RunResult:
    """Train cfg.model under cfg, write a new run directory under out_root, and return the result.

    The test set is evaluated after every epoch for the record, but the reported model (best.pt) is the epoch with
    the best validation accuracy: the test set never chooses anything. Started by torchrun, every process calls this
    and the run is data-parallel (see train/distributed.py). `progress`: see progress.progress_mode; only the first
    process prints. Without `data`, the data set cfg names is loaded (once per machine). `observers` are told how
    the run goes and may stop it early (train/events.py).
    """
    t_start = time.perf_counter()
    with contextlib.ExitStack() as cleanup:
        t = set_up(cfg, data, progress, t_start, observers=observers)
        open_new_run(t, Path(out_root), cleanup)
        return train_to_end(t, cleanup)


def resume(run_dir: str | Path, data: ImageSet | None = None, progress: Progress = True, device: str | None = None,
           threads: int | None = None, data_dir: str | None = None, observers: Sequence[Observer] = (),
           fall_back: bool = False) -> RunResult:
    """Continue the run in run_dir from its last.pt (the end of its last finished epoch), with the settings it was
    started with. On the same kind of CPU a resumed run ends with the same weights, bit for bit, as one that never
    stopped; a run may be resumed by a different number of processes. A time-budget run resumes to the step count
    it had planned. Only where it runs (device, threads, data directory) may change; for a run on an image folder,
    data_dir is the folder's new place if it has moved. `fall_back`: a last.pt that cannot be used gives way to
    last.pt's predecessor, last.prev.pt (a named run continued without a person's say: a restart)."""
    t_start = time.perf_counter()
    run_dir, last = resume_source(run_dir)
    ckpt, fallback = _resume_checkpoint(last, fall_back)
    changes = {k: v for k, v in dict(device=device, threads=threads, data_dir=data_dir).items() if v is not None}
    cfg = replace(TrainConfig.from_dict(ckpt.config), **changes)
    with contextlib.ExitStack() as cleanup:
        if distributed.world_from_env().is_main:  # before touching anything: the run may still be going
            cleanup.callback(RunDirLock(run_dir).release)
        if ckpt.finished and (run_dir / "summary.json").exists():  # nothing to train: say so, once its files are checked
            main = distributed.world_from_env().is_main
            return finished_run(run_dir, ckpt, progress_mode(progress) if main else "off", cfg if main else None)
        t = set_up(cfg, data, progress, t_start, checkpoint=ckpt, observers=observers)
        restore(t, ckpt)
        reopen_run(t, run_dir, fallback)
        return train_to_end(t, cleanup)


def _resume_checkpoint(last: Path, fall_back: bool) -> tuple[Checkpoint, str]:
    """The checkpoint a resume starts from: `last`, or, with fall_back and when it cannot be used, the one it
    replaced (last.prev.pt beside it), with a note that says so."""
    try:
        return Checkpoint.for_resume(last), ""
    except CheckpointError as e:
        prev = last.with_name("last.prev.pt")
        if not fall_back or not prev.is_file():
            raise
        try:
            ckpt = Checkpoint.for_resume(prev)
        except CheckpointError:
            raise e from None  # neither can be used: the newer one's reason
        return ckpt, f" ({last.name} could not be used: {e}; continuing from the checkpoint before it, {prev.name})"


def resume_source(path: str | Path) -> tuple[Path, Path]:
    """The run directory and the last.pt that `--resume PATH` names: a run directory, or its last.pt, exactly as
    given (a path that does not exist is not taken for its parent)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist (--resume takes a run directory, or its last.pt)")
    if path.is_dir():
        if not (path / "last.pt").is_file():
            raise CheckpointError(f"{path} has no last.pt to resume from (is it a cnnlab run directory?)")
        return path, path / "last.pt"
    if path.name != "last.pt":
        raise CheckpointError(f"{path} is not a run's last.pt: a run continues from the end of its last epoch, so "
                              "--resume takes the run directory, or its last.pt")
    return path.parent, path


def finished_run(run_dir: Path, ckpt: Checkpoint, mode: str, cfg: TrainConfig | None = None) -> RunResult:
    """A run that had already finished, as it recorded its result, once its files are checked: config.json,
    summary.json and metrics.csv read (load_run), and best.pt and last.pt loaded as evaluate loads them. A file
    missing or broken is an error naming it, never a success. Given `cfg` (the process that writes the run
    directory), what a run killed during its finish left undone is completed: the half-written file removed, the
    curves drawn."""
    run = load_run(run_dir)
    best, _, best_state = load_model(run_dir / "best.pt", "cpu")
    network, _, _ = load_model(run_dir / "last.pt", "cpu")
    if best_state.get("epoch") != ckpt.best.get("epoch"):
        raise CheckpointError(f"{run_dir / 'best.pt'} holds epoch {best_state.get('epoch')}, but the run chose "
                              f"epoch {ckpt.best.get('epoch')}: it is not this run's best.pt")
    s = run.summary
    try:
        result = RunResult(
            run_dir=run_dir, model=s["model"], recipe=s["recipe"], parameters=int(s["parameters"]), epochs=int(s["epochs"]),
            best_epoch=int(s["best_epoch"]), best_val_acc=_nan_for_none(s["best_val_acc"]), test_acc=_nan_for_none(s["test_acc"]),
            final_test_acc=_nan_for_none(s["final_test_acc"]), train_seconds=float(s["train_seconds"]),
            collapsed_at_epoch=s.get("collapsed_at_epoch"), history=list(ckpt.history), network=network,
            model_kwargs=dict(s.get("model_kwargs") or {}), config=run.config,
            threads=[int(n) for n in s.get("threads") or []],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{run_dir / 'summary.json'} is not a summary cnnlab wrote ({type(e).__name__}: {e})") from None
    if cfg is not None:
        remove_partial_writes(run_dir)
        if not (run_dir / "curves.png").exists():
            _plot_run_curves(run_dir, cfg, ckpt.history)
    say(mode, f"{result.model}: {run_dir} had already finished ({ckpt.epoch} epochs); best.pt, last.pt, config.json, "
              "summary.json and metrics.csv checked: nothing to resume")
    return result


def _nan_for_none(v: Any) -> float:
    return float("nan") if v is None else float(v)


def set_up(cfg: TrainConfig, data: ImageSet | None, progress: Progress, t_start: float,
           checkpoint: Checkpoint | None = None, observers: Sequence[Observer] = ()) -> Training:
    """Everything a run trains with, as a fresh run builds it: device, data, model, loader, plan, optimiser.
    A checkpoint only says what the data cannot: the run's recorded length and its image folder's place."""
    observers = [*observers, *_asked_for(cfg)]  # first: a missing package is said before any work
    world, device = distributed.init(resolve_device(cfg.device))
    mode = progress_mode(progress) if world.is_main else "off"
    configure(device, cfg.threads)
    cores = (ThreadChooser(cfg.adapt_threads, lambda line: say(mode, f"{cfg.model}: {line}"), max_threads=cfg.threads or None)
             if device.type == "cpu" else None)
    if cores is not None:
        cores.start()  # the first window: from here to the first step
    if data is None:
        with distributed.local_main_first(world):  # one fetch into each machine's cache
            data = training_data(cfg, cfg.data_dir, progress=mode == "bar", recorded=checkpoint is not None,
                                 classes=checkpoint.classes if checkpoint is not None else None)
    given = cfg
    cfg = config_for_data(cfg, data) if checkpoint is None else _recorded_config(cfg, data)
    note = fit_note(given, cfg, len(data.train_images)) if checkpoint is None else None
    splits = make_splits(data, cfg.val_size, device)
    torch.manual_seed(cfg.seed)
    model_kwargs = dict(in_channels=1 if splits.train_x.dim() == 3 else splits.train_x.shape[1],
                        num_classes=len(data.classes), image_size=int(splits.train_x.shape[-1]))
    model = create_model(cfg.model, **model_kwargs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    loader = _loader(cfg, splits, world, generator)
    plan = _plan(cfg, splits, loader, world, t_start, checkpoint)
    optimizer = build_optimizer(model, cfg)
    return Training(
        cfg, world, device, mode, note, tuple(data.classes), splits, model, distributed.wrap(model, world, device), model_kwargs,
        loader, generator, plan, optimizer, build_schedule(optimizer, cfg, plan), _recorder(cfg, model),
        autocast_dtype(device, cfg.amp), t_start, observers=Observers(observers, main=world.is_main), cores=cores,
    )


def _asked_for(cfg: TrainConfig) -> list[Observer]:
    """The observers the run's config asks for, whoever started it (the CLI, cnnlab.fit, a resume)."""
    if not cfg.tensorboard:
        return []
    from cnnlab.train.tensorboard import TensorBoardWriter  # its package is an optional extra

    return [TensorBoardWriter()]


def config_for_data(cfg: TrainConfig, data: ImageSet) -> TrainConfig:
    """A new run's config once its data are loaded: the data decide what it is trained on (an image folder's
    absolute path), how it is standardised, an image folder's size, how many images are held out, and what a
    folder's recipe left open (batch size, learning rate, epochs; config.fit_to_data)."""
    cfg = replace(cfg, dataset=data.name, norm_mean=data.mean, norm_std=data.std)
    if lookup(data.name).entry.takes_path:  # recorded, so that evaluate and resume rebuild the same split and size
        cfg = replace(cfg, image_size=int(data.train_images.shape[-1]))
    cfg = fit_to_data(cfg, len(data.train_images))
    if cfg.val_size >= len(data.train_images) // 2:
        # MNIST's 5,000 held-out images would be most of a small folder: hold out a tenth instead.
        cfg = replace(cfg, val_size=len(data.train_images) // 10)
    return cfg


def _recorded_config(cfg: TrainConfig, data: ImageSet) -> TrainConfig:
    """A resumed run keeps its config; an image folder's place is recorded anew (--data-dir may have named where
    it moved)."""
    return replace(cfg, dataset=data.name, data_dir=None) if lookup(data.name).entry.takes_path else cfg


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
          checkpoint: Checkpoint | None) -> Plan:
    """How long the run is: the length a checkpoint recorded, else a time budget's plan, steps or epochs."""
    if checkpoint is not None:
        return Plan(len(loader), total_steps=checkpoint.total_steps)
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


def restore(t: Training, ckpt: Checkpoint) -> None:
    """Put a checkpoint's state into a run set_up has just built, so it continues where it stopped."""
    if ckpt.steps_per_epoch is not None and ckpt.steps_per_epoch != len(t.loader):
        raise CheckpointError(
            f"the run trained on {ckpt.steps_per_epoch} batches per epoch, but this data set gives "
            f"{len(t.loader)}: it can only be resumed on the data it started with"
        )
    load_weights(t.model, ckpt.model_state, ckpt.source, t.cfg.model)
    try:  # checked for its types by load_checkpoint; whether it fits this optimiser, torch's loaders tell
        t.optimizer.load_state_dict(ckpt.optimizer_state)
        t.schedule.load_state_dict(ckpt.schedule_state)
        t.generator.set_state(ckpt.rng["generator"])
        torch.set_rng_state(ckpt.rng["torch"])
    except (ValueError, RuntimeError, TypeError, KeyError, IndexError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"{ckpt.source}: its optimiser, schedule or random state does not fit this run "
                              f"({reason})") from None
    t.epoch, t.steps = ckpt.epoch, ckpt.steps
    t.history, t.best, t.branch_grads = list(ckpt.history), dict(ckpt.best), list(ckpt.branch_grads)
    t.elapsed_before = t.history[-1]["elapsed"] if t.history else 0.0
    if ckpt.position is not None:  # written within epoch ckpt.epoch + 1: the epoch continues from there
        _restore_position(t, ckpt)


def _restore_position(t: Training, ckpt: Checkpoint) -> None:
    pos = ckpt.position
    sums = pos["sums"]  # one row per process that wrote it
    # The same processes take their own sums back; another number of them starts from the total on rank 0
    # (the epoch's row is then the same sum, added in another order).
    mine = sums[t.world.rank] if len(sums) == t.world.world_size else (sums.sum(0) if t.main else torch.zeros_like(sums[0]))
    t.position = EpochPosition(pos["rng_at_start"], pos["lr"], pos["step"], ckpt.rng["generator"], mine)
    t.steps = ckpt.steps - pos["step"]
    t.elapsed_before = pos["elapsed"]
    if t.recorder is not None and pos.get("recorder") is not None:
        t.recorder.load_state(pos["recorder"])


def open_new_run(t: Training, out_root: Path, cleanup: contextlib.ExitStack) -> None:
    """A new run directory (rank 0 makes and locks it), its config, and where it is, said at once."""
    run_dir = None
    if t.main:
        run_dir = make_run_dir(out_root, t.cfg.model, t.cfg.run_name)
        lock = RunDirLock(run_dir)  # first: a named run's directory may be another process's, and is then left alone
        # Exits run last first: a run that stops before its first epoch ends is removed once its lock is released.
        cleanup.push(_remove_if_stopped_early(run_dir))
        cleanup.callback(lock.release)
        if t.cfg.run_name is not None:  # a named run may start again where one stopped before its first checkpoint
            clear_unstarted(run_dir)
        write_json(run_dir / "config.json", t.cfg.to_dict())
    _share_run_dir(t, run_dir, f"{t.cfg.model}: run directory {{}}")
    if t.note:
        say(t.mode, f"{t.cfg.model}: {t.note}")


def _remove_if_stopped_early(run_dir: Path) -> Callable[..., bool]:
    """An ExitStack exit callback: a run that an exception stops before its first epoch ended leaves no directory
    behind (nothing in it could be resumed or read: see rundir.remove_unstarted)."""

    def remove(exc_type, exc, tb) -> bool:
        if exc is not None:
            remove_unstarted(run_dir)
        return False  # never swallows the exception

    return remove


def reopen_run(t: Training, run_dir: Path, note: str = "") -> None:
    """A stopped run's directory made what its checkpoint says: no half-written files, no rows after it."""
    if t.main:
        remove_partial_writes(run_dir)
        write_metrics(run_dir / "metrics.csv", t.history)  # drops rows written after the checkpoint
        write_json(run_dir / "config.json", t.cfg.to_dict())  # an image folder's new place, the device it runs on
    within = f", step {t.position.step} of epoch {t.epoch + 1}" if t.position is not None else ""
    _share_run_dir(t, run_dir, f"{t.cfg.model}: resuming {{}} after epoch {t.epoch}{within}{note}")


def _share_run_dir(t: Training, run_dir: Path | None, line: str) -> None:
    t.run_dir = Path(distributed.broadcast_object(str(run_dir) if run_dir else None, t.world))
    say(t.mode, line.format(t.run_dir))


def train_to_end(t: Training, cleanup: contextlib.ExitStack) -> RunResult:
    """The epochs, then the finish; an exception on the way carries the run directory (progress.stop_advice)."""
    cleanup.push(mark_stop(t.run_dir))
    t.observers.started(t.run_dir, t.cfg.to_dict(), t.plan.total_steps, len(t.loader))
    t.last_saved = time.monotonic()
    while t.epoch < t.plan.epochs:
        run_epoch(t)
    return finish(t)


def run_epoch(t: Training) -> None:
    """Train one epoch, evaluate, record the row, keep the best, and (rank 0) write metrics and checkpoints."""
    cfg = t.cfg
    t.epoch += 1
    t0 = time.perf_counter()
    position, t.position = t.position or EpochPosition(t.generator.get_state(), t.optimizer.param_groups[0]["lr"]), None
    lr = position.lr
    of = "?" if isinstance(t.plan, BudgetPlan) else str(t.plan.epochs)
    bar = tqdm(total=t.plan.steps_in_epoch(t.epoch), initial=position.step, desc=f"{cfg.model} {t.epoch}/{of}",
               leave=False, disable=t.mode != "bar", unit="step")
    with bar:  # closed (its line cleared) however the epoch ends, so no message lands on a half-drawn bar
        train_loss, train_acc, steps = train_one_epoch(
            t.trained, t.loader, t.optimizer, t.schedule, cfg, t.generator, bar, t.plan, t.epoch, t.amp_dtype,
            t.recorder, t.world, _watch(t), position, _saver(t, position), t.cores,
        )
    t.steps += steps
    train_seconds = time.perf_counter() - t0
    val_loss, val_acc = evaluate(t.model, t.splits.val_x, t.splits.val_y, cfg, t.world)
    test_loss, test_acc = evaluate(t.model, t.splits.test_x, t.splits.test_y, cfg, t.world)
    t.plan.after_epoch(t.epoch, t.steps, train_seconds, time.perf_counter() - t0 - train_seconds)
    has_val = cfg.val_size > 0
    row = dict(
        epoch=t.epoch, steps=t.steps, train_loss=train_loss, train_acc=train_acc,
        val_loss=val_loss if has_val else None, val_acc=val_acc if has_val else None,
        test_loss=test_loss, test_acc=test_acc, lr=lr, seconds=time.perf_counter() - t0,
        elapsed=t.elapsed_before + time.perf_counter() - t.t_start, time=time.time(),
    )
    t.history.append(row)
    collapsed = collapse_epoch(t.history, len(t.classes), t.plan.epochs)
    newly_collapsed = collapsed is not None and collapsed != collapse_epoch(t.history[:-1], len(t.classes), t.plan.epochs)
    if t.recorder is not None:
        t.branch_grads.append({"epoch": t.epoch, "steps": t.recorder.steps, "mean_squared_norm": t.recorder.mean()})
        t.recorder.reset()
    # Selection: best validation accuracy, ties to the later (longer-trained) epoch; without a validation split
    # (the course), the last epoch.
    score = val_acc if has_val else float(t.epoch)
    is_best = score >= t.best["val"]
    if is_best:
        t.best = {"val": score, "epoch": t.epoch, "test": test_acc}
    if t.main:
        _record_epoch(t, row, is_best)
        t.last_saved = time.monotonic()
        t.observers.epoch(row)
        if newly_collapsed:
            say(t.mode, collapse_warning(cfg.model, t.history, len(t.classes), collapsed, cfg.lr))


def _watch(t: Training) -> Callable[[int, float], bool] | None:
    """What the loop calls every log_every steps when someone watches: tell them, and stop when any process's
    observers ask (all processes decide together, so they end at the same step)."""
    if not t.observers:
        return None

    def watch(step: int, loss: float) -> bool:
        t.observers.step(step, t.plan.total_steps, t.epoch, loss)
        keep_going = torch.tensor(0 if t.observers.should_stop() else 1, device=t.device)
        if distributed.all_reduce_min(keep_going, t.world).item():
            return False
        say(t.mode, f"{t.cfg.model}: stopped at step {step:,} of {t.plan.total_steps:,}, as asked; "
                    "this epoch is evaluated and the run finishes with what was trained")
        return True

    return watch


def _saver(t: Training, position: EpochPosition) -> Callable[[int, torch.Tensor], None] | None:
    """What the loop calls every log_every steps under --checkpoint-every: once the interval has passed on rank 0's
    clock, every process writes nothing but takes part (its running sums are gathered) and rank 0 writes last.pt
    with the epoch's place in it. All processes decide together, so they save at the same step."""
    if t.cfg.checkpoint_every <= 0:
        return None

    def save(steps: int, sums: torch.Tensor) -> None:
        late = time.monotonic() - t.last_saved >= t.cfg.checkpoint_every if t.main else False
        due = torch.tensor(1 if late else 0, device=t.device)
        if not distributed.all_reduce_sum(due, t.world).item() or steps >= t.plan.steps_in_epoch(t.epoch):
            return  # not yet, or the epoch's last step: its own checkpoint follows at once
        every = distributed.all_gather(sums, t.world).cpu()
        if t.main:
            at = dict(step=steps, sums=every, rng_at_start=position.rng_at_start, lr=position.lr,
                      elapsed=t.elapsed_before + time.perf_counter() - t.t_start,
                      recorder=t.recorder.state() if t.recorder is not None else None)
            _save_last(t, _checkpoint(t, t.history[-1] if t.history else {}, position=at))
        t.last_saved = time.monotonic()

    return save


def _save_last(t: Training, ckpt: Checkpoint) -> None:
    """last.pt, atomically, keeping the one it replaces as last.prev.pt (a damaged last.pt then costs one interval)."""
    assert t.run_dir is not None
    keep_previous(t.run_dir / "last.pt", t.run_dir / "last.prev.pt")
    ckpt.save(t.run_dir / "last.pt")


def _record_epoch(t: Training, row: dict[str, Any], is_best: bool) -> None:
    # The order matters for a run killed in between: resume starts from last.pt and rewrites metrics.csv from
    # it, so last.pt is written last.
    assert t.run_dir is not None
    append_metrics(t.run_dir / "metrics.csv", row)
    if t.recorder is not None:
        write_json(t.run_dir / "branch_grads.json", {"model": t.cfg.model, "epochs": t.branch_grads})
    ckpt = _checkpoint(t, row)
    if is_best:
        ckpt.save(t.run_dir / "best.pt")
    _save_last(t, ckpt)
    if t.mode != "off":
        v = f"val {100 * row['val_acc']:.2f}%  " if row["val_acc"] is not None else ""
        n = len(t.loader)
        of = f"{t.steps / n:.2f}/{t.plan.total_steps / n:.2f}" if isinstance(t.plan, BudgetPlan) else f"{t.epoch:>2}/{t.plan.epochs}"
        say(t.mode, f"{t.cfg.model} epoch {of}  loss {row['train_loss']:.4f}  train {100 * row['train_acc']:.2f}%  "
                    f"{v}test {100 * row['test_acc']:.2f}%  {row['seconds']:.1f}s")


def _checkpoint(t: Training, row: dict[str, Any], position: dict[str, Any] | None = None) -> Checkpoint:
    """Everything needed to evaluate or resume the run as it stands after this epoch, or, with a position, at
    that step within it (`row` is then the last finished epoch's)."""
    within = position is not None
    return Checkpoint(
        model_state={k: v.detach().cpu() for k, v in t.model.state_dict().items()},
        model_kwargs=t.model_kwargs, config=t.cfg.to_dict(), classes=list(t.classes),
        epoch=t.epoch - within, steps=t.steps + (position["step"] if within else 0), steps_per_epoch=len(t.loader), total_steps=t.plan.total_steps,
        world_size=t.world.world_size, metrics={k: v for k, v in row.items() if v is not None},
        history=t.history, best=t.best, optimizer_state=t.optimizer.state_dict(), schedule_state=t.schedule.state_dict(),
        rng={"torch": torch.get_rng_state(), "generator": t.generator.get_state().cpu()}, branch_grads=t.branch_grads,
        position=position,
    )


def finish(t: Training) -> RunResult:
    """The result; rank 0 writes summary.json and curves.png."""
    if t.recorder is not None:
        t.recorder.close()
    has_val = t.cfg.val_size > 0
    result = RunResult(
        run_dir=t.run_dir, model=t.cfg.model, recipe=t.cfg.recipe, parameters=count_parameters(t.model),
        epochs=t.epoch, best_epoch=t.best["epoch"], best_val_acc=t.best["val"] if has_val else float("nan"),
        test_acc=t.best["test"], final_test_acc=t.history[-1]["test_acc"],
        train_seconds=t.elapsed_before + time.perf_counter() - t.t_start,
        collapsed_at_epoch=collapse_epoch(t.history, len(t.classes), t.plan.epochs), history=t.history, network=t.model,
        model_kwargs=t.model_kwargs, config=t.cfg.to_dict(), threads=list(t.cores.used) if t.cores is not None else [],
    )
    if len(result.threads) > 1:
        say(t.mode, f"{t.cfg.model}: trained on {' -> '.join(map(str, result.threads))} threads as other programs came and "
                    "went (--adapt-threads): the same seed repeats these digits only under the same load")
    if t.main:
        write_json(t.run_dir / "summary.json", _json_safe(result.summary()))
        _plot_run_curves(t.run_dir, t.cfg, t.history)
        t.observers.finished(_json_safe(result.summary()))
    return result


def _plot_run_curves(run_dir: Path, cfg: TrainConfig, history: list[dict[str, Any]]) -> None:
    plot_curves(history_as_floats(history), run_dir / "curves.png", f"{cfg.model} ({cfg.recipe} recipe)", training_note(cfg))


def history_as_floats(history: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{k: float("nan") if v is None else float(v) for k, v in r.items()} for r in history]


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
