"""A study: many training runs planned up front, run one after another through the trainer, and resumable.

A study directory holds:

    plan.json             what the study is (its name and settings, every job): a second start reads it back and
                          refuses other settings, so that a resumed study is the study it began as
    runs/<job>/           each job's run directory, named after the job (the trainer's own: a stopped run of that name
                          is continued from its last checkpoint, train/run.py)
    results/<job>.json    a finished job's outcome: what the tables read; a job with one is never trained again
    curves/<job>.json     a job's training-loss curve so far (kept across a stop, cut back to where the run resumes)

A job that diverges (its loss stops being a finite number) is an outcome too, "diverged at step N", as the papers
report "fail". Progress is one bar over all the jobs, its unit an estimate of each job's work (multiply-adds of the
training steps and evaluations), so that its time estimate weighs a deep network's job above a shallow one's.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.atomic import atomic_writer
from cnnlab.config import make_spec
from cnnlab.data import ImageSet
from cnnlab.data.tensors.batching import normalize
from cnnlab.errors import CnnlabError
from cnnlab.models import SkipBlock, count_parameters, create_model
from cnnlab.models.cost import forward_flops
from cnnlab.train.events import Observer
from cnnlab.train.loop import NonFiniteLoss

LOG_EVERY = 10  # steps between the points of a training-loss curve
TAIL = 0.1  # the final training loss: the mean of the last tenth of the curve's points


class StudyError(CnnlabError, ValueError):
    """A study that cannot start or go on (a directory planned with other settings): one line saying what to do."""


@dataclass(frozen=True)
class Job:
    """One training run of a study: a model (and its design) on a data set from a seed, for a number of steps."""

    dataset: str  # a data set registry name
    model: str  # a model registry name
    block: str  # its design ("depth=56,width=16"), "" for none
    seed: int
    steps: int  # optimiser steps, batch 128
    settings: dict[str, Any] = field(default_factory=dict)  # other TrainConfig settings of the study's recipe

    @property
    def name(self) -> str:
        design = "".join(part.split("=")[0][0] + part.split("=")[1].replace(".", "") for part in self.block.split(",")
                         if "=" in part)
        return f"{self.dataset}-{self.model}" + (f"-{design}" if design else "") + f"-s{self.seed}"


@dataclass
class Outcome:
    """What a finished job gave: the table's figures, the curve, and the gradient flow through the units."""

    job: str
    model: str
    block: str
    dataset: str
    seed: int
    parameters: int
    steps: int
    train_seconds: float
    train_loss: float | None  # mean of the curve's last tenth; None when it diverged
    test_error: float | None  # %, of the epoch chosen by validation accuracy; None when it diverged
    diverged_at: int | None = None  # the step at which the loss stopped being finite
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, mean training loss since the last point)
    # The gradient's root-mean-square at each residual unit's input, first unit to last, over that at the last unit's
    # output: at initialisation and after training (empty for a network without residual units).
    grad_init: list[float] = field(default_factory=list)
    grad_trained: list[float] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> "Outcome":
        """A finished job's outcome; a StudyError naming the file when it cannot be read."""
        try:
            d = json.loads(path.read_text())
            d["curve"] = [tuple(p) for p in d.get("curve", [])]
            return cls(**d)
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise StudyError(f"{path} cannot be read ({e}); remove it and the same command reads that run "
                             "back from its directory (or trains it again if that is gone)") from None


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path, "w") as f:
        json.dump(obj, f)
        f.write("\n")


class _Curve(Observer):
    """The job's training-loss curve, every LOG_EVERY steps, kept in curves/<job>.json at each epoch's end; a resumed
    run starts again from a checkpoint, so the points after it are dropped as the run passes them again."""

    def __init__(self, path: Path, on_step: Callable[[int, int], None]) -> None:
        self.path, self.on_step = path, on_step
        self.points: list[tuple[int, float]] = [tuple(p) for p in json.loads(path.read_text())] if path.exists() else []

    def step(self, step: int, total_steps: int, epoch: int, loss: float) -> None:
        self.points = [p for p in self.points if p[0] < step] + [(step, loss)]
        self.on_step(step, total_steps)

    def epoch(self, row: dict[str, Any]) -> None:
        _write(self.path, self.points)


def unit_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """The gradient of the loss at each residual unit's input x_l, first unit to last, then at the last unit's output
    x_L, each as a root mean square over its values, divided by the last: the quantity of the paper's Eq. (5),
    dE/dx_l = dE/dx_L (1 + d/dx_l of the F's between). Empty for a network without residual units. One batch, in
    training mode (batch statistics), parameters untouched."""
    units = [m for m in model.modules() if isinstance(m, SkipBlock)]
    if not units:
        return []
    grads: list[torch.Tensor | None] = [None] * (len(units) + 1)

    def keep(i: int):
        def hook(grad: torch.Tensor) -> None:
            grads[i] = grad.detach()
        return hook

    def pre(i: int):
        def hook(module, args):
            if args[0].requires_grad:
                args[0].register_hook(keep(i))
        return hook

    def post(module, args, output):
        output.register_hook(keep(len(units)))

    handles = [u.register_forward_pre_hook(pre(i)) for i, u in enumerate(units)]
    handles.append(units[-1].register_forward_hook(post))
    was_training = model.training
    state = {k: v.clone() for k, v in model.state_dict().items()}  # batch norm's running statistics stay as they were
    try:
        model.train()
        x = images.clone().requires_grad_(True)  # so that the first unit's input carries a gradient
        F.cross_entropy(model(x), labels).backward()
    finally:
        for h in handles:
            h.remove()
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    rms = [float(g.pow(2).mean().sqrt()) if g is not None else math.nan for g in grads]
    last = rms[-1]
    return [r / last if last > 0 else math.nan for r in rms]


def probe_batch(data: ImageSet, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n training images, standardised, and their labels: the batch every gradient measurement uses."""
    images = data.train_images[:n]
    images = images.unsqueeze(1) if images.dim() == 3 else images
    return normalize(images, data.mean, data.std), data.train_labels[:n]


def job_work(job: Job, eval_images: int) -> float:
    """An estimate of a job's work, in multiply-adds: a training step is about three forwards (forward, and a backward
    of twice the work), an evaluation one."""
    macs = forward_flops(create_model(job.model, block=job.block)) / 2
    return macs * (3 * 128 * job.steps + eval_images)


class Study:
    """A study's jobs, run into `out` one after another and read back from it.

    Args:
        name: the study's name ("identity-mappings"), in plan.json.
        settings: what else defines it (depth, width, steps...), in plan.json; a directory planned with other
            settings is refused.
        jobs: in the order they run.
        out: the study directory.
    """

    def __init__(self, name: str, settings: dict[str, Any], jobs: Sequence[Job], out: str | Path) -> None:
        self.name, self.settings, self.jobs, self.out = name, settings, list(jobs), Path(out)
        names = [j.name for j in self.jobs]
        if len(set(names)) != len(names):
            raise ValueError("a study's jobs must differ in data set, model, design or seed")

    def plan(self) -> dict[str, Any]:
        return {"study": self.name, "settings": self.settings, "jobs": [asdict(j) for j in self.jobs]}

    def check_plan(self) -> None:
        """Write plan.json, or check that the one there is this study's (a resume)."""
        path = self.out / "plan.json"
        if path.exists():
            try:
                planned = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise StudyError(f"{path} cannot be read ({e}); start the study in another --out") from None
            if planned != json.loads(json.dumps(self.plan())):
                was = planned.get("study"), planned.get("settings")
                raise StudyError(f"{self.out} holds the study {was[0]!r} with settings {was[1]}, not this one "
                                 f"({self.name!r} with {self.settings}): continue it with its own settings, or give "
                                 "another --out")
            return
        _write(path, self.plan())

    def result_path(self, job: Job) -> Path:
        return self.out / "results" / f"{job.name}.json"

    def outcomes(self) -> list[Outcome]:
        """The finished jobs' outcomes, in plan order."""
        return [Outcome.read(self.result_path(j)) for j in self.jobs if self.result_path(j).exists()]

    def run(self, progress: bool = True, say: Callable[[str], None] = print) -> list[Outcome]:
        """Run every job without an outcome yet (continuing a stopped one), and return every outcome."""
        from tqdm.auto import tqdm

        from cnnlab.data.sets.registry import lookup

        self.check_plan()
        todo = [j for j in self.jobs if not self.result_path(j).exists()]
        if not todo:
            return self.outcomes()
        datasets = {j.dataset: lookup(j.dataset) for j in todo}
        loaded: dict[str, ImageSet] = {}
        eval_images = 15_000  # validation and test split of an MNIST-sized set, evaluated once a (partial) epoch
        work = {j.name: job_work(j, eval_images) for j in todo}
        progress = progress and sys.stderr.isatty()  # else a line per job: a bar's carriage returns would fill a log
        bar = tqdm(total=sum(work.values()), unit="", unit_scale=True, disable=not progress, dynamic_ncols=True,
                   bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} multiply-adds [{elapsed}<{remaining}]", desc=self.name)
        done, started = 0.0, time.monotonic()
        try:
            for k, job in enumerate(todo):
                if job.dataset not in loaded:
                    loaded = {job.dataset: datasets[job.dataset].load(progress=False)}  # one set in memory at a time
                bar.set_description(f"{self.name} {k + 1}/{len(todo)} {job.model}")
                start = done

                def on_step(step: int, total: int, start: float = start, w: float = work[job.name]) -> None:
                    bar.n = start + w * min(step, total) / max(total, 1)
                    bar.refresh()

                outcome = self._run_job(job, loaded[job.dataset], on_step)
                done = start + work[job.name]
                bar.n = done
                bar.refresh()
                line = self._line(outcome)
                if progress:
                    bar.write(line)
                else:  # a log: each line says how far the study is, and how long the rest should take at this pace
                    left = (time.monotonic() - started) * (bar.total - done) / done if done else 0.0
                    say(f"{line} [{k + 1}/{len(todo)}" + (f", about {_duration(left)} left]" if k + 1 < len(todo) else "]"))
        finally:
            bar.close()
        return self.outcomes()

    def _run_job(self, job: Job, data: ImageSet, on_step: Callable[[int, int], None]) -> Outcome:
        from cnnlab.train.run import train

        spec = make_spec(job.model, "default", job.dataset, block=job.block, seed=job.seed, steps=job.steps,
                         run_name=job.name, log_every=LOG_EVERY, **job.settings)
        curve = _Curve(self.out / "curves" / f"{job.name}.json", on_step)
        images, labels = probe_batch(data)
        torch.manual_seed(job.seed)
        fresh = create_model(job.model, block=job.block)
        grad_init = unit_gradients(fresh, images, labels)
        t0 = time.perf_counter()
        finished = self.out / "runs" / job.name / "summary.json"
        if finished.exists():  # trained, but stopped before its outcome was written: read back from its run
            return self._read_back(job, finished, grad_init, curve.points, images, labels)
        try:
            result = train([spec], data=data, out_root=self.out / "runs", progress=False, observers=[curve]).results[0]
        except NonFiniteLoss as e:
            outcome = Outcome(job.name, job.model, spec.config.block, job.dataset, job.seed,
                              count_parameters(fresh), job.steps,
                              time.perf_counter() - t0, None, None, diverged_at=e.step, curve=curve.points,
                              grad_init=grad_init)
        else:
            points = curve.points
            last_epoch = float(result.history[-1]["train_loss"])  # a run shorter than LOG_EVERY steps has no point
            outcome = Outcome(job.name, job.model, spec.config.block, job.dataset, job.seed, result.parameters,
                              job.steps, result.train_seconds, final_loss(points, last_epoch),
                              100.0 * (1.0 - result.test_acc), curve=points, grad_init=grad_init,
                              grad_trained=unit_gradients(result.network.cpu(), images, labels))
        _write(self.result_path(job), asdict(outcome))
        return outcome

    def _read_back(self, job: Job, summary_path: Path, grad_init: list[float], points: list[tuple[int, float]],
                   images: torch.Tensor, labels: torch.Tensor) -> Outcome:
        from cnnlab.runs.trained import load

        summary = json.loads(summary_path.read_text())
        trained = load(summary_path.parent, "cpu")
        outcome = Outcome(job.name, job.model, trained.config.block, job.dataset, job.seed, summary["parameters"],
                          job.steps, summary["train_seconds"], final_loss(points, None),
                          100.0 * (1.0 - summary["test_acc"]), curve=points, grad_init=grad_init,
                          grad_trained=unit_gradients(trained.network, images, labels))
        _write(self.result_path(job), asdict(outcome))
        return outcome

    @staticmethod
    def _line(o: Outcome) -> str:
        what = f"{o.dataset} {o.model} seed {o.seed}:"
        if o.diverged_at is not None:
            return f"{what} diverged at step {o.diverged_at}"
        return f"{what} training loss {o.train_loss:.4f}, test error {o.test_error:.2f}% ({o.train_seconds:.0f} s)"


def final_loss(points: Sequence[tuple[int, float]], fallback: float | None) -> float | None:
    """A run's final training loss: the mean of the last tenth (TAIL) of its curve's points; `fallback` without any."""
    tail = list(points)[-max(1, math.ceil(len(points) * TAIL)):]
    return sum(p[1] for p in tail) / len(tail) if tail else fallback


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


# ---- summaries --------------------------------------------------------------------------------------------------

def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd


def compare(ours: Sequence[float], base: Sequence[float]) -> str:
    """"worse", "better" or "same": the means differ by more than the two spreads together, or they do not
    (a lower value is better: an error, a loss)."""
    (m, s), (mb, sb) = mean_sd(ours), mean_sd(base)
    if m - mb > s + sb:
        return "worse"
    if mb - m > s + sb:
        return "better"
    return "same"


def by(outcomes: Sequence[Outcome], **match: Any) -> list[Outcome]:
    return [o for o in outcomes if all(getattr(o, k) == v for k, v in match.items())]


def model_facts(model: str, block: str) -> tuple[int, int]:
    """(parameters, multiply-adds per 28x28 image) of a model with its design."""
    m = create_model(model, block=block)
    return count_parameters(m), forward_flops(m) // 2
