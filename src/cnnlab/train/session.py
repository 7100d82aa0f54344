"""A training session, the one owner of what training needs around the runs: the device and the process group
(torchrun's, when there is one), one data load shared by the runs, each run (train/run.py: its directory, lock,
epochs and finish), and the barrier that lets every process leave once rank 0 has written the run directories.

`cnnlab train` and `cnnlab.train(...)` both call `train` here. A torchrun worker then ends with
`distributed.leave(code)` (cnnlab.cli.main does that), since gloo's threads outlive the group.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from cnnlab.atomic import UnsafeDirectory
from cnnlab.config import TrainConfig
from cnnlab.data import ImageSet
from cnnlab.device import resolve_device
from cnnlab.runs.model import training_data
from cnnlab.runs.rundir import Run, RunFinished, check_run_dir, check_run_name, name_from, run_state
from cnnlab.train import distributed
from cnnlab.train.distributed import World
from cnnlab.train.events import Observer
from cnnlab.train.progress import Progress, progress_mode, say
from cnnlab.train.run import RunResult, config_for_data, fit, history_as_floats, resume


@dataclass
class Session:
    """What a session trained: one result per run, in order. `world`: this process's place; only rank 0 (is_main)
    wrote run directories and should report."""

    results: list[RunResult]
    world: World = field(default_factory=World)

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    def runs(self) -> list[Run]:
        """The finished runs as `cnnlab compare` reads them, from what the runs returned (not read back from disk)."""
        return [Run(r.run_dir, r.config, r.summary(), history_as_floats(r.history)) for r in self.results]


def train(configs: Sequence[TrainConfig] = (), *, resume_from: str | Path | None = None, data: ImageSet | None = None,
          out_root: str | Path = "runs", progress: Progress = True, device: str | None = None,
          threads: int | None = None, data_dir: str | None = None, observers: Sequence[Observer] = ()) -> Session:
    """Train each config in turn on one shared load of their data set, or continue the stopped run in
    `resume_from` (then `configs` is empty and device/threads/data_dir may say where it now runs).

    Raises the library's errors (DataError, CheckpointError, RunDirBusy, ValueError, NonFiniteLoss...); an
    exception that leaves a run carries its directory (see progress.stop_advice). `observers` watch every run
    (train/events.py).
    """
    if bool(configs) == (resume_from is not None):
        raise ValueError("train needs configs to start runs, or resume_from to continue one: one of the two")
    world, _ = distributed.init(resolve_device(device or (configs[0].device if configs else "auto")))
    try:
        if resume_from is not None:  # the checkpoint is checked before any data is loaded
            results = [resume(resume_from, data, progress, device=device, threads=threads, data_dir=data_dir,
                              observers=observers)]
        else:
            configs = _named(configs, world)
            data = data if data is not None else _shared_data(configs[0], world, progress)
            _say_data(configs[0], data, world, progress)
            results = []
            for cfg in configs:
                stopped = _stopped_run(cfg, Path(out_root), world)
                if stopped is None:
                    results.append(fit(cfg, data, out_root=out_root, progress=progress, observers=observers))
                else:  # the run's own settings; only where it runs is this command's
                    results.append(resume(stopped, data, progress, device=cfg.device, threads=cfg.threads,
                                          data_dir=cfg.data_dir, observers=observers, fall_back=True))
        distributed.barrier(world)  # every rank leaves once rank 0 has written the run directories
    finally:
        distributed.shutdown()
    return Session(results, world)


def _named(configs: Sequence[TrainConfig], world: World) -> list[TrainConfig]:
    """The configs with their run names checked, and under torchrun named after the rendezvous (and the model)
    when no name was given, so that a group the agent starts again after a failure finds its runs."""
    named = [c for c in configs if c.run_name is not None]
    if named and len(configs) > 1:
        raise ValueError(f"a run name names one run, but {len(configs)} models are to be trained; train one model "
                         "with --run-name, or leave it out")
    for c in named:
        check_run_name(c.run_name)
    rdzv = distributed.rendezvous_id() if world.distributed else None
    if rdzv is None or named:
        return list(configs)
    return [replace(c, run_name=name_from(f"{rdzv}-{c.model}")) for c in configs]


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


def _shared_data(cfg: TrainConfig, world: World, progress: Progress) -> ImageSet:
    """The data set the runs train on, loaded once: on each machine local rank 0 first, into its cache."""
    with distributed.local_main_first(world):
        shows_bar = world.is_main and progress_mode(progress) == "bar"
        return training_data(cfg, cfg.data_dir, progress=shows_bar, recorded=False)


def _say_data(cfg: TrainConfig, data: ImageSet, world: World, progress: Progress) -> None:
    """The counts a run trains, selects and tests on, as the runs split them (the hold-out from the training
    images' end), so that they agree with any later message about a split."""
    mode = progress_mode(progress) if world.is_main else "off"
    val = config_for_data(cfg, data).val_size
    counts = f"{len(data.train_images) - val:,} training + {val:,} validation + {len(data.test_images):,} test images"
    procs = f" in {world.world_size} processes" if world.distributed else ""
    say(mode, f"{data.title}: {counts} from {data.source}{procs}")
