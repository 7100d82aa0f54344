"""Training, read top to bottom. `train` is the session: the process group, one data load shared by the runs, each
run, the barrier. `Run.run` is one run: build the parts, restore if resuming, open the run directory, train epoch
after epoch, finish.

A fresh run and a resumed one differ only at the start: `fit` builds the parts and opens a new run directory,
`resume` builds the same parts, restores the checkpoint's state into them and reopens its directory. From there
one loop runs, with no resume branches in it (nanoGPT's `init_from` is the model). Each process of a
data-parallel run calls the same functions; rank 0 alone writes the run directory (runs/writer.RunWriter).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from cnnlab.atomic import UnsafeDirectory
from cnnlab.config import RunSpec, TrainConfig, resolve
from cnnlab.data import ImageSet
from cnnlab.device import configure, resolve_device, training_precision
from cnnlab.models import count_parameters
from cnnlab.runs.checkpoint import Checkpoint, CheckpointError, load_weights
from cnnlab.runs.forward import evaluate
from cnnlab.runs.trained import load
from cnnlab.runs.rundir import Run as FinishedRun
from cnnlab.runs.rundir import RunDirError, RunFinished, check_run_dir, check_run_name, load_run, name_from, run_state
from cnnlab.runs.writer import RunWriter, history_as_floats
from cnnlab.train import distributed
from cnnlab.train.collapse import collapse_epoch, collapse_warning
from cnnlab.train.cores import ThreadChooser
from cnnlab.train.distributed import World
from cnnlab.train.events import Observer, Observers
from cnnlab.train.augment import training_note
from cnnlab.train.loop import EpochPosition, StepHook, StepHooks, train_one_epoch
from cnnlab.train.parts import build_parts
from cnnlab.train.plan import BudgetPlan
from cnnlab.train.progress import EpochBar, Progress, Terminal, mark_stop, progress_mode


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
    # what this process's training steps computed their forward pass in: "bfloat16" under autocast (--amp bf16, or
    # auto on a CPU with bfloat16 instructions: device.training_dtype), else the weights' dtype ("float32");
    # evaluation is float32 unless --amp bf16. "" in the record of a run from before it was recorded.
    precision: str = ""
    data_title: str | None = field(default=None, repr=False)  # as tables show it (an image folder by its path)

    def summary(self) -> dict[str, Any]:
        """What summary.json holds: JSON's values only (a number that is not finite, such as the best validation
        accuracy of a run without a hold-out, is None)."""
        d = {k: v for k, v in self.__dict__.items() if k not in ("history", "network", "config", "data_title")}
        d["run_dir"] = str(self.run_dir)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


@dataclass
class Session:
    """What a session trained: one result per run, in order. `world`: this process's place; only rank 0 (is_main)
    wrote run directories and should report."""

    results: list[RunResult]
    world: World = field(default_factory=World)

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    def runs(self) -> list[FinishedRun]:
        """The finished runs as `cnnlab compare` reads them, from what the runs returned (not read back from disk)."""
        return [FinishedRun(r.run_dir, r.config, r.summary(), history_as_floats(r.history), r.network, r.data_title)
                for r in self.results]


def train(configs: Sequence[TrainConfig | RunSpec] = (), *, resume_from: str | Path | None = None,
          data: ImageSet | None = None, out_root: str | Path = "runs", progress: Progress = True,
          device: str | None = None, threads: int | None = None, data_dir: str | None = None,
          observers: Sequence[Observer] = ()) -> Session:
    """Train each config (or spec) in turn on one shared load of their data set, or continue the stopped run in
    `resume_from` (then `configs` is empty and device/threads/data_dir may say where it now runs).

    Raises the library's errors (DataError, CheckpointError, RunDirBusy, ValueError, NonFiniteLoss...); an
    exception that leaves a run carries its directory (see progress.stop_advice). `observers` watch every run
    (train/events.py).
    """
    if bool(configs) == (resume_from is not None):
        raise ValueError("train needs configs to start runs, or resume_from to continue one: one of the two")
    specs = [c if isinstance(c, RunSpec) else resolve(c) for c in configs]  # every name looked up once, here
    world, _ = distributed.init(resolve_device(device or (specs[0].config.device if specs else "auto")))
    try:
        if resume_from is not None:  # the checkpoint is checked before any data is loaded
            results = [resume(resume_from, data, progress, device=device, threads=threads, data_dir=data_dir,
                              observers=observers, world=world)]
        else:
            specs = _named(specs, world)
            data = data if data is not None else _load(specs[0], world, progress_mode(progress) == "bar")
            results = []
            for i, spec in enumerate(specs):
                stopped = _stopped_run(spec.config, Path(out_root), world)
                if stopped is None:
                    results.append(fit(spec, data, out_root, progress, observers, world=world, say_data=i == 0))
                else:  # the run's own settings; only where it runs is this command's
                    cfg = spec.config
                    results.append(resume(stopped, data, progress, device=cfg.device, threads=cfg.threads,
                                          data_dir=cfg.data_dir, observers=observers, fall_back=True, world=world,
                                          say_data=i == 0))
        distributed.barrier(world)  # every rank leaves once rank 0 has written the run directories
    finally:
        distributed.shutdown()
    return Session(results, world)


def fit(cfg: TrainConfig | RunSpec, data: ImageSet | None = None, out_root: str | Path = "runs",
        progress: Progress = True, observers: Sequence[Observer] = (), *, world: World | None = None,
        say_data: bool = False) -> RunResult:
    """Train cfg.model under cfg, write a new run directory under out_root, and return the result.

    The test set is evaluated after every epoch for the record, but the reported model (best.pt) is the epoch with
    the best validation accuracy: the test set never chooses anything. Started by torchrun, every process calls this
    and the run is data-parallel (see train/distributed.py). `progress`: see progress.progress_mode; only the first
    process prints. Without `data`, the data set cfg names is loaded (once per machine). `observers` are told how
    the run goes and may stop it early (train/events.py).
    """
    spec = cfg if isinstance(cfg, RunSpec) else resolve(cfg)
    return Run(spec, data, progress, observers, world, out_root=Path(out_root), say_data=say_data).run()


def resume(run_dir: str | Path, data: ImageSet | None = None, progress: Progress = True, device: str | None = None,
           threads: int | None = None, data_dir: str | None = None, observers: Sequence[Observer] = (),
           fall_back: bool = False, *, world: World | None = None, say_data: bool = False) -> RunResult:
    """Continue the run in run_dir from its last.pt (the end of its last finished epoch), with the settings it was
    started with. On the same kind of CPU a resumed run ends with the same weights, bit for bit, as one that never
    stopped; a run may be resumed by a different number of processes. A time-budget run resumes to the step count
    it had planned. Only where it runs (device, threads, data directory) may change; for a run on an image folder,
    data_dir is the folder's new place if it has moved. `fall_back`: a last.pt that cannot be used gives way to
    last.pt's predecessor, last.prev.pt (a named run continued without a person's say: a restart)."""
    run_dir, last = resume_source(run_dir)
    ckpt, fallback = _resume_checkpoint(last, fall_back)
    changes = {k: v for k, v in dict(device=device, threads=threads, data_dir=data_dir).items() if v is not None}
    spec = resolve(replace(TrainConfig.from_dict(ckpt.config), **changes))
    main = distributed.world_from_env().is_main
    writer = RunWriter.lock(run_dir) if main else None  # before touching anything: the run may still be going
    with contextlib.ExitStack() as unlock:
        if writer is not None:
            unlock.callback(writer.close, stopped=False)
        if ckpt.finished and (run_dir / "summary.json").exists():  # nothing to train: say so, once its files are checked
            return finished_run(run_dir, ckpt, Terminal(progress_mode(progress) if main else "off"), writer)
        run = Run(spec, data, progress, observers, world, checkpoint=ckpt, writer=writer, say_data=say_data,
                  resumed_note=fallback)
        unlock.pop_all()  # from here the run releases it, however it ends
    return run.run()


class Run:
    """One run: its parts, what it has trained so far, who watches it, and its directory's writer (rank 0)."""

    def __init__(self, spec: RunSpec, data: ImageSet | None, progress: Progress, observers: Sequence[Observer],
                 world: World | None, *, out_root: Path | None = None, say_data: bool = False,
                 checkpoint: Checkpoint | None = None, writer: RunWriter | None = None, resumed_note: str = ""):
        self.t_start = time.perf_counter()
        self.spec, self.data, self.checkpoint = spec, data, checkpoint
        self.out_root, self.writer, self.say_data, self.resumed_note = out_root, writer, say_data, resumed_note
        self.run_dir: Path | None = None  # every rank's, once rank 0 has opened it
        self.world, self.device = distributed.init(resolve_device(spec.config.device)) if world is None else \
            (world, _device_of(world, spec.config.device))
        self.mode = progress_mode(progress) if self.world.is_main else "off"
        terminal = Terminal(self.mode)
        asked = _asked_for(spec.config)  # first: a missing package is said before any work
        self.observers = Observers([*observers, *asked, terminal], main=self.world.is_main)
        # Those that may stop the run or want its steps: only then does every log step ask all processes.
        self.watched = bool(observers or asked)
        self.epoch, self.steps = 0, 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, float] = {"val": -1.0, "epoch": 0, "test": float("nan")}
        self.branch_grads: list[dict[str, Any]] = []
        self.elapsed_before = 0.0  # seconds trained before a resume
        self.position: EpochPosition | None = None  # where the next epoch starts, after a checkpoint within it
        self.last_saved = 0.0  # time.monotonic() of the last checkpoint (rank 0's clock decides --checkpoint-every)

    def run(self) -> RunResult:
        """Build the parts, restore if resuming, open the run directory, train epoch after epoch, finish."""
        with contextlib.ExitStack() as cleanup:
            if self.writer is not None:  # a stopped run's directory, locked before anything in it was read
                cleanup.callback(self.writer.close, stopped=False)
            cores = self._start_threads()
            data = self.data if self.data is not None else _load(self.spec, self.world, self.mode == "bar", self.checkpoint)
            ckpt = self.checkpoint
            self.p = build_parts(self.spec, data, self.world, self.device, self.t_start,
                                 recorded=self.spec.config if ckpt else None, total_steps=ckpt.total_steps if ckpt else None)
            if ckpt is not None:
                self._restore(ckpt)
            if self.say_data:
                self._say_data(data)
            self._open_dir(cleanup)
            hooks = StepHooks([h for h in (self.p.recorder, cores, self._bar(), Watch(self), Saver(self)) if h])
            self.observers.started(self.run_dir, self.p.cfg.to_dict(), self.p.plan.total_steps, len(self.p.loader))
            self.last_saved = time.monotonic()
            while self.epoch < self.p.plan.epochs:
                self._run_epoch(hooks)
            return self._finish(cores)

    def say(self, line: str) -> None:
        self.observers.say(line)

    def _start_threads(self) -> ThreadChooser | None:
        """The CPU threads, kept for the whole run (or fitted to the free cores with --adapt-threads)."""
        cfg = self.spec.config
        configure(self.device, cfg.threads)
        if self.device.type != "cpu":
            return None
        cores = ThreadChooser(cfg.adapt_threads, lambda line: self.say(f"{cfg.model}: {line}"),
                              max_threads=cfg.threads or None)
        cores.start()  # the first window: from here to the first step
        return cores

    def _bar(self) -> EpochBar | None:
        of = "?" if isinstance(self.p.plan, BudgetPlan) else str(self.p.plan.epochs)
        return EpochBar(self.p.cfg.model, self.p.plan, of) if self.mode == "bar" else None

    def _say_data(self, data: ImageSet) -> None:
        """The counts a run trains, selects and tests on, as the run splits them (the hold-out from the training
        images' end), so that they agree with any later message about a split."""
        s = self.p.splits
        counts = f"{len(s.train_x):,} training + {len(s.val_x):,} validation + {len(s.test_x):,} test images"
        procs = f" in {self.world.world_size} processes" if self.world.distributed else ""
        self.say(f"{data.title}: {counts} from {data.source}{procs}")

    def _restore(self, ckpt: Checkpoint) -> None:
        """Put a checkpoint's state into the parts just built, so the run continues where it stopped."""
        p = self.p
        if ckpt.steps_per_epoch is not None and ckpt.steps_per_epoch != len(p.loader):
            raise CheckpointError(
                f"the run trained on {ckpt.steps_per_epoch} batches per epoch, but this data set gives "
                f"{len(p.loader)}: it can only be resumed on the data it started with"
            )
        if (p.average is None) != (ckpt.trained_state is None):
            raise CheckpointError(f"{ckpt.source}: its config and its weights disagree on whether the run keeps an "
                                  "average of its weights (--ema)")
        load_weights(p.model, ckpt.model_state if p.average is None else ckpt.trained_state, ckpt.source, p.cfg.model)
        if p.average is not None:  # the average continues from the step count, as if the run had never stopped
            load_weights(p.average.model, ckpt.model_state, ckpt.source, p.cfg.model)
            p.average.updates = ckpt.steps
        try:  # checked for its types when it was read; whether it fits this optimiser, torch's loaders tell
            p.optimizer.load_state_dict(ckpt.optimizer_state)
            p.schedule.load_state_dict(ckpt.schedule_state)
            p.generator.set_state(ckpt.rng["generator"])
            torch.set_rng_state(ckpt.rng["torch"])
        except (ValueError, RuntimeError, TypeError, KeyError, IndexError) as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise CheckpointError(f"{ckpt.source}: its optimiser, schedule or random state does not fit this run "
                                  f"({reason})") from None
        self.epoch, self.steps = ckpt.epoch, ckpt.steps
        self.history, self.best, self.branch_grads = list(ckpt.history), dict(ckpt.best), list(ckpt.branch_grads)
        self.elapsed_before = self.history[-1]["elapsed"] if self.history else 0.0
        if ckpt.position is not None:  # written within epoch ckpt.epoch + 1: the epoch continues from there
            pos, sums = ckpt.position, ckpt.position["sums"]  # one row of sums per process that wrote it
            # The same processes take their own sums back; another number of them starts from the total on rank 0
            # (the epoch's row is then the same sum, added in another order).
            w = self.world
            mine = sums[w.rank] if len(sums) == w.world_size else (sums.sum(0) if w.is_main else torch.zeros_like(sums[0]))
            self.position = EpochPosition(pos["rng_at_start"], pos["lr"], pos["step"], ckpt.rng["generator"], mine)
            self.steps = ckpt.steps - pos["step"]
            self.elapsed_before = pos["elapsed"]
            if p.recorder is not None and pos.get("recorder") is not None:
                p.recorder.load_state(pos["recorder"])

    def _open_dir(self, cleanup: contextlib.ExitStack) -> None:
        """Rank 0 makes a new run directory or reopens the stopped one; every rank learns where it is. From then on
        an error that stops the run carries its directory (progress.mark_stop), for the message that says what was
        kept."""
        cfg, main = self.p.cfg, self.world.is_main
        if self.checkpoint is None and main:
            self.writer = RunWriter.new(self.out_root, cfg.model, cfg.run_name, cfg.to_dict())
            cleanup.push(lambda exc_type, exc, tb: self.writer.close(stopped=exc is not None))
        elif self.writer is not None:
            self.writer.reopen(cfg.to_dict(), self.history)
        where = self.writer.run_dir if self.writer is not None else None
        if where is not None:  # named on whatever stops the run from here, the broadcast's lost peer included
            cleanup.push(mark_stop(where))
        self.run_dir = Path(distributed.broadcast_object(str(where) if where else None, self.world))
        if where is None:
            cleanup.push(mark_stop(self.run_dir))
        if self.checkpoint is None:
            self.say(f"{cfg.model}: run directory {self.run_dir}")
            if self.p.note:
                self.say(f"{cfg.model}: {self.p.note}")
        else:
            within = f", step {self.position.step} of epoch {self.epoch + 1}" if self.position is not None else ""
            self.say(f"{cfg.model}: resuming {self.run_dir} after epoch {self.epoch}{within}{self.resumed_note}")

    def _run_epoch(self, hooks: StepHook) -> None:
        """Train one epoch, evaluate, record the row, keep the best, and (rank 0) write metrics and checkpoints."""
        p, cfg = self.p, self.p.cfg
        self.epoch += 1
        t0 = time.perf_counter()
        position, self.position = self.position or EpochPosition(p.generator.get_state(), p.optimizer.param_groups[0]["lr"]), None
        self.epoch_position = position
        train_loss, train_acc, steps = train_one_epoch(p, self.epoch, hooks, position)
        self.steps += steps
        train_seconds = time.perf_counter() - t0
        val_loss, val_acc = self._evaluate(p.splits.val_x, p.splits.val_y)
        test_loss, test_acc = self._evaluate(p.splits.test_x, p.splits.test_y)
        p.plan.after_epoch(self.epoch, self.steps, train_seconds, time.perf_counter() - t0 - train_seconds)
        has_val = cfg.val_size > 0
        row = dict(
            epoch=self.epoch, steps=self.steps, train_loss=train_loss, train_acc=train_acc,
            val_loss=val_loss if has_val else None, val_acc=val_acc if has_val else None,
            test_loss=test_loss, test_acc=test_acc, lr=position.lr, seconds=time.perf_counter() - t0,
            elapsed=self.elapsed_before + time.perf_counter() - self.t_start, time=time.time(),
        )
        self.history.append(row)
        if p.recorder is not None:
            self.branch_grads.append({"epoch": self.epoch, "steps": p.recorder.steps, "mean_squared_norm": p.recorder.mean()})
            p.recorder.reset()
        # Selection: best validation accuracy, ties to the later (longer-trained) epoch; without a validation split
        # (the course), the last epoch.
        score = val_acc if has_val else float(self.epoch)
        is_best = score >= self.best["val"]
        if is_best:
            self.best = {"val": score, "epoch": self.epoch, "test": test_acc}
        if self.world.is_main:
            self._record(row, is_best)

    def _evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """(loss, accuracy) on a split, each process its part, the sums added up over all of them."""
        w = self.world
        return evaluate(self.p.kept, images, labels, self.p.cfg, part=w.split_part(len(images)),
                        reduce=lambda sums: distributed.all_reduce_sum(sums, w))

    def _record(self, row: dict[str, Any], is_best: bool) -> None:
        p, cfg = self.p, self.p.cfg
        grads = {"model": cfg.model, "epochs": self.branch_grads} if p.recorder is not None else None
        self.writer.epoch(row, self.checkpoint_now(row), is_best, grads)
        self.last_saved = time.monotonic()
        self.observers.epoch(row)
        n = len(p.loader)
        v = f"val {100 * row['val_acc']:.2f}%  " if row["val_acc"] is not None else ""
        of = f"{self.steps / n:.2f}/{p.plan.total_steps / n:.2f}" if isinstance(p.plan, BudgetPlan) else f"{self.epoch:>2}/{p.plan.epochs}"
        self.say(f"{cfg.model} epoch {of}  loss {row['train_loss']:.4f}  train {100 * row['train_acc']:.2f}%  "
                 f"{v}test {100 * row['test_acc']:.2f}%  {row['seconds']:.1f}s")
        collapsed = collapse_epoch(self.history, len(p.classes), p.plan.epochs)
        if collapsed is not None and collapsed != collapse_epoch(self.history[:-1], len(p.classes), p.plan.epochs):
            self.say(collapse_warning(cfg.model, self.history, len(p.classes), collapsed, cfg.lr))

    def checkpoint_now(self, row: dict[str, Any], position: dict[str, Any] | None = None) -> Checkpoint:
        """Everything needed to evaluate or resume the run as it stands after this epoch, or, with a position, at
        that step within it (`row` is then the last finished epoch's)."""
        p, within = self.p, position is not None
        return Checkpoint(
            model_state=_on_cpu(p.kept), trained_state=_on_cpu(p.model) if p.average is not None else None,
            model_kwargs=p.model_kwargs, config=p.cfg.to_dict(), classes=list(p.classes),
            epoch=self.epoch - within, steps=self.steps + (position["step"] if within else 0), steps_per_epoch=len(p.loader),
            total_steps=p.plan.total_steps, world_size=self.world.world_size,
            metrics={k: v for k, v in row.items() if v is not None}, history=self.history, best=self.best,
            optimizer_state=p.optimizer.state_dict(), schedule_state=p.schedule.state_dict(),
            rng={"torch": torch.get_rng_state(), "generator": p.generator.get_state().cpu()},
            branch_grads=self.branch_grads, position=position,
        )

    def _finish(self, cores: ThreadChooser | None) -> RunResult:
        """The result; rank 0 writes summary.json and curves.png."""
        p, cfg = self.p, self.p.cfg
        if p.recorder is not None:
            p.recorder.close()
        has_val = cfg.val_size > 0
        result = RunResult(
            run_dir=self.run_dir, model=cfg.model, recipe=cfg.recipe, parameters=count_parameters(p.model),
            epochs=self.epoch, best_epoch=self.best["epoch"], best_val_acc=self.best["val"] if has_val else float("nan"),
            test_acc=self.best["test"], final_test_acc=self.history[-1]["test_acc"],
            train_seconds=self.elapsed_before + time.perf_counter() - self.t_start,
            collapsed_at_epoch=collapse_epoch(self.history, len(p.classes), p.plan.epochs), history=self.history,
            network=p.kept, model_kwargs=p.model_kwargs, config=cfg.to_dict(),
            threads=list(cores.used) if cores is not None else [],
            precision=training_precision(p.device, cfg.amp, next(p.model.parameters()).dtype),
            data_title=self.spec.dataset.path if self.spec.dataset.entry.takes_path else self.spec.dataset.title,
        )
        if len(result.threads) > 1:
            self.say(f"{cfg.model}: trained on {' -> '.join(map(str, result.threads))} threads as other programs came "
                     "and went (--adapt-threads): the same seed repeats these digits only under the same load")
        if self.writer is not None:
            self.writer.finish(result.summary(), self.history, f"{cfg.model} ({cfg.recipe} recipe)", training_note(cfg))
            self.observers.finished(result.summary())
        return result


class Watch(StepHook):
    """Every log_every steps, when someone watches: tell them, and stop when any process's observers ask (all
    processes decide together, so they end at the same step)."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def __bool__(self) -> bool:
        return self.run.watched

    def at_log(self, step: int, steps: int, loss: float, sums: torch.Tensor) -> bool:
        r = self.run
        r.observers.step(step, r.p.plan.total_steps, r.epoch, loss)
        keep_going = torch.tensor(0 if r.observers.should_stop() else 1, device=r.device)
        if distributed.all_reduce_min(keep_going, r.world).item():
            return False
        r.say(f"{r.p.cfg.model}: stopped at step {step:,} of {r.p.plan.total_steps:,}, as asked; "
              "this epoch is evaluated and the run finishes with what was trained")
        return True


class Saver(StepHook):
    """Under --checkpoint-every: once the interval has passed on rank 0's clock, every process takes part (its
    running sums are gathered) and rank 0 writes last.pt with the epoch's place in it. All processes decide
    together, so they save at the same step."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def __bool__(self) -> bool:
        return self.run.spec.config.checkpoint_every > 0

    def at_log(self, step: int, steps: int, loss: float, sums: torch.Tensor) -> bool:
        r = self.run
        late = time.monotonic() - r.last_saved >= r.p.cfg.checkpoint_every if r.world.is_main else False
        due = torch.tensor(1 if late else 0, device=r.device)
        if not distributed.all_reduce_sum(due, r.world).item() or steps >= r.p.plan.steps_in_epoch(r.epoch):
            return False  # not yet, or the epoch's last step: its own checkpoint follows at once
        every = distributed.all_gather(sums, r.world).cpu()
        if r.writer is not None:
            pos = r.epoch_position
            at = dict(step=steps, sums=every, rng_at_start=pos.rng_at_start, lr=pos.lr,
                      elapsed=r.elapsed_before + time.perf_counter() - r.t_start,
                      recorder=r.p.recorder.state() if r.p.recorder is not None else None)
            r.writer.last(r.checkpoint_now(r.history[-1] if r.history else {}, position=at))
        r.last_saved = time.monotonic()
        return False


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


def finished_run(run_dir: Path, ckpt: Checkpoint, terminal: Terminal, writer: RunWriter | None) -> RunResult:
    """A run that had already finished, as it recorded its result, once its files are checked: config.json,
    summary.json and metrics.csv read (load_run), and best.pt and last.pt loaded as evaluate loads them. A file
    missing or broken is an error naming it, never a success. Given the `writer` (the process that writes the run
    directory), what a run killed during its finish left undone is completed: the half-written file removed, the
    curves drawn."""
    run = load_run(run_dir)
    best, last = load(run_dir / "best.pt", "cpu"), load(run_dir / "last.pt", "cpu")
    if best.record.epoch != ckpt.best.get("epoch"):
        raise CheckpointError(f"{run_dir / 'best.pt'} holds epoch {best.record.epoch}, but the run chose "
                              f"epoch {ckpt.best.get('epoch')}: it is not this run's best.pt")
    s = run.summary
    try:
        result = RunResult(
            run_dir=run_dir, model=s["model"], recipe=s["recipe"], parameters=int(s["parameters"]), epochs=int(s["epochs"]),
            best_epoch=int(s["best_epoch"]), best_val_acc=_nan_for_none(s["best_val_acc"]), test_acc=_nan_for_none(s["test_acc"]),
            final_test_acc=_nan_for_none(s["final_test_acc"]), train_seconds=float(s["train_seconds"]),
            collapsed_at_epoch=s.get("collapsed_at_epoch"), history=list(ckpt.history), network=last.network,
            model_kwargs=dict(s.get("model_kwargs") or {}), config=run.config,
            threads=[int(n) for n in s.get("threads") or []], precision=str(s.get("precision") or ""),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{run_dir / 'summary.json'} is not a summary cnnlab wrote ({type(e).__name__}: {e})") from None
    if writer is not None:
        cfg = TrainConfig.from_dict(ckpt.config)
        writer.finish(None, ckpt.history, f"{cfg.model} ({cfg.recipe} recipe)", training_note(cfg))
    terminal.say(f"{result.model}: {run_dir} had already finished ({ckpt.epoch} epochs); best.pt, last.pt, config.json, "
                 "summary.json and metrics.csv checked: nothing to resume")
    return result


def _on_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    """A network's weights, as a checkpoint holds them."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _nan_for_none(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _device_of(world: World, name: str) -> torch.device:
    """This process's device in a group already joined: on CUDA, GPU LOCAL_RANK of its machine."""
    device = resolve_device(name)
    return torch.device("cuda", world.local_rank) if device.type == "cuda" and world.distributed else device


def _load(spec: RunSpec, world: World, bar: bool, checkpoint: Checkpoint | None = None) -> ImageSet:
    """The data set a run trains on, loaded once on each machine (local rank 0 first, into its cache); a resumed
    run's with the classes its model was trained on."""
    cfg = spec.config
    with distributed.local_main_first(world):
        return spec.dataset.load(cfg.data_dir, image_size=cfg.image_size, split_seed=cfg.split_seed,
                                 progress=bar and world.is_main, recorded=checkpoint is not None,
                                 classes=checkpoint.classes if checkpoint is not None else None)


def _asked_for(cfg: TrainConfig) -> list[Observer]:
    """The observers the run's config asks for, whoever started it (the CLI, cnnlab.fit, a resume)."""
    if not cfg.tensorboard:
        return []
    from cnnlab.train.tensorboard import TensorBoardWriter  # its package is an optional extra

    return [TensorBoardWriter()]


def _resume_checkpoint(last: Path, fall_back: bool) -> tuple[Checkpoint, str]:
    """The checkpoint a resume starts from: `last`, or, with fall_back and when it cannot be used, the one it
    replaced (last.prev.pt beside it), with a note that says so."""
    try:
        return Checkpoint.read(last, resume=True), ""
    except CheckpointError as e:
        prev = last.with_name("last.prev.pt")
        if not fall_back or not prev.is_file():
            raise
        try:
            ckpt = Checkpoint.read(prev, resume=True)
        except CheckpointError:
            raise e from None  # neither can be used: the newer one's reason
        return ckpt, f" ({last.name} could not be used: {e}; continuing from the checkpoint before it, {prev.name})"


def _named(specs: list[RunSpec], world: World) -> list[RunSpec]:
    """The specs with their run names checked, and under torchrun named after the rendezvous (and the model)
    when no name was given, so that a group the agent starts again after a failure finds its runs."""
    named = [s for s in specs if s.config.run_name is not None]
    if named and len(specs) > 1:
        raise ValueError(f"a run name names one run, but {len(specs)} models are to be trained; train one model "
                         "with --run-name, or leave it out")
    for s in named:
        check_run_name(s.config.run_name)
    rdzv = distributed.rendezvous_id() if world.distributed else None
    if rdzv is None or named:
        return list(specs)
    return [replace(s, config=replace(s.config, run_name=name_from(f"{rdzv}-{s.config.model}"))) for s in specs]


def _stopped_run(cfg: TrainConfig, out_root: Path, world: World) -> Path | None:
    """The run directory a named run continues (a checkpoint in it and no finished marker, or any run of that
    name in a group the agent restarted), or None for a new run. Rank 0 looks and every rank takes its answer:
    a rank that looked for itself might see the directory before or after rank 0 made it."""
    if cfg.run_name is None:
        return None
    answer: tuple[str, str] = ("new", "")
    if world.is_main:
        path = out_root / cfg.run_name
        try:  # before anything is read in it: a link to someone's directory is not looked into, nor written
            check_run_dir(path)
        except OSError as e:  # every rank raises it, as it would the other answers: none waits for rank 0
            answer = ("unsafe", str(e))
        else:
            state = run_state(path)
            if state == "finished" and not distributed.restarted():
                answer = ("error", str(RunFinished(path)))
            elif state != "new":  # a restarted group whose run had finished ends it again, training nothing
                answer = ("stopped", str(path))
    kind, value = distributed.broadcast_object(answer, world)
    if kind == "error":
        raise RunFinished(out_root / cfg.run_name)
    if kind == "unsafe":
        raise UnsafeDirectory(out_root / cfg.run_name, value)
    return Path(value) if kind == "stopped" else None
