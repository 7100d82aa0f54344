"""Speed benchmark: the course's loop against cnnlab's training, side by side in one run on one machine.

    python benchmarks/speed.py                        # resnet and inception_net, all arms
    python benchmarks/speed.py --models resnet --budget-seeds 1 --course-runs 0
    python benchmarks/speed.py --models --busy-runs 3 --out benchmarks/results/busy   # the busy arm alone

For each model it measures, each training run in a fresh process started from here, data from the cache:
  course     benchmarks/course_loop.py: per-sample PIL -> tensor -> normalise, DataLoader(64, shuffle),
             SGD(0.01, momentum 0.5), 10 epochs, the test set after each epoch;
  default    `cnnlab train --model M` with its default recipe (every epoch evaluated);
  budget     `cnnlab train --model M --time-budget B` for B = each of BUDGETS[M] in turn, 5 seeds each, until
             the first B at which all 5 end at >= 99.0% test accuracy: the time to 99.0% is the median wall
             time of those 5 processes, from process start to exit, set beside the course's 10 epochs; then
             one more run at that budget, timed phase by phase (start-up, training, evaluation, figure, exit);
  busy       `cnnlab train --model resnet --steps 400` on an idle machine, then beside one and two busy cores
             (other processes spinning), with the default threads (kept: the run repeats to the digit) and with
             --adapt-threads (fitted to the free cores);
and reports, for course and default, the wall time from process start until test accuracy first reaches 99.0%
(the test set is evaluated after every epoch and that time is included), the test accuracy at the end, the whole
process's wall time and its peak resident memory (VmHWM, which the process reports at exit). A run that fails is
recorded with its reason and the benchmark goes on. In this process it then measures the
steady-state training throughput of cnnlab's training step (augmentation, forward, backward, optimiser)
and of the course's (batch fetching included: that is its cost), the FLOPs of a training step counted
by torch.utils.flop_counter, and the fp32 matrix-product rate of these same cores, so that achieved
GFLOP/s can be quoted as a fraction of it.

Writes benchmarks/results/speed.json (every measurement, saved as it is made; --resume skips those
already there) and speed.md (the table the README quotes). Run it alone: on 2 cores any other load
changes every figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from course_loop import CourseMNIST  # noqa: E402
from machine import TIMING_LR, ProcessFailed, attempt, describe_machine, write_file, write_json  # noqa: E402

from cnnlab.data import load_mnist  # noqa: E402
from cnnlab.config import make_spec  # noqa: E402
from cnnlab.models import create_model  # noqa: E402
from cnnlab.tables import format_table  # noqa: E402
from cnnlab.device import configure, training_precision  # noqa: E402
from cnnlab.train.distributed import SINGLE, World  # noqa: E402
from cnnlab.train.loop import EpochPosition, StepHooks, train_one_epoch  # noqa: E402
from cnnlab.train.parts import build_parts  # noqa: E402

TARGET_ACC = 0.99
# The budgets the `budget` arm tries, seconds, smallest first, from where a CPU with AMX (bfloat16 steps) may reach
# 99% (the 2-core AVX-512 EPYC needed 99% within one epoch); half a second apart where resnet crosses 99%, so that the
# step between two budgets does not decide the figure.
BUDGETS = {
    "resnet": [3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 9.0, 10.0, 13.0, 17.0, 25.0],
    "inception_net": [12.0, 14.0, 16.0, 18.0, 20.0, 22.0, 24.0, 26.0, 28.0, 31.0, 35.0, 40.0, 50.0, 75.0],
    "basic_cnn": [3.0, 4.0, 5.0, 7.0, 10.0, 15.0],
}
SEEDS_PER_BUDGET = 5  # seeds 0-4: a budget must hold for any seed, not for the few it was tuned on
# Training steps are timed at TIMING_LR (1e-4): a step costs the same at any rate, and this one cannot diverge
# (at the recipe's 0.05, a 60-step plan diverged on one machine).
THROUGHPUT_LR = TIMING_LR
# Targets: times sooner than the course's 10 epochs (moonshots in brackets).
SPEEDUP_TARGETS = {"resnet": (20, 30), "inception_net": (10, 20)}
BUSY_STEPS = 400  # the busy arm's run: about one epoch of resnet


# ---- training runs, each in its own process ----------------------------------------------------


# Runs a script or `-m module` and, at exit, writes its own peak resident memory (VmHWM, kB) to the file
# named by $CNNLAB_BENCH_RSS. Read from inside: the rusage of a child forked from this (large) process
# counts this process's memory too, since Linux carries the parent's high-water mark across fork and exec.
_PEAK_RSS_WRAPPER = """
import atexit, os, runpy, sys
def _report():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM"))
    with open(os.environ["CNNLAB_BENCH_RSS"], "w") as f:
        f.write(kb)
atexit.register(_report)
argv = sys.argv[1:]
if argv[0] == "-m":
    sys.argv = argv[1:]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
else:
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")
"""


def _launch(args: list[str], rss_file: str) -> tuple[float, subprocess.Popen]:
    """Start `python ARGS` (a script and its arguments, or -m module ...) under the peak-memory wrapper."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", CNNLAB_BENCH_RSS=rss_file)
    t0 = time.time()
    cmd = [sys.executable, "-c", _PEAK_RSS_WRAPPER, *args]
    return t0, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen, rss_file: str) -> tuple[str, float]:
    """Wait for proc; its stdout and its peak resident memory in MB."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise ProcessFailed(" ".join(proc.args[3:6]), proc.returncode, err)
    return out, int(Path(rss_file).read_text()) / 1024


def attempt_run(fn, *args, **kwargs) -> dict:
    """fn(*args, **kwargs), a run's dict of results; or, when it fails, {"failed": reason} (machine.attempt), so that
    one run that goes wrong on some machine is recorded as failed and the benchmark goes on."""
    result, reason = attempt(fn, *args, **kwargs)
    return result if reason is None else {"failed": reason}


def _summarise_epochs(arm: str, model: str, seed: int, t0: float, t_end: float, rss: float, epochs: list[dict]) -> dict:
    reached = next((e["time"] - t0 for e in epochs if e["test_acc"] >= TARGET_ACC), None)
    return dict(
        arm=arm, model=model, seed=seed, epochs=len(epochs), time_to_99=reached,
        final_test_acc=epochs[-1]["test_acc"], wall_seconds=t_end - t0, peak_rss_mb=rss,
        curve=[(round(e["time"] - t0, 2), e["test_acc"]) for e in epochs],
    )


def run_course(model: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        rss = str(Path(tmp) / "rss")
        t0, proc = _launch([str(HERE / "course_loop.py"), "--model", model, "--seed", str(seed)], rss)
        out, peak = _finish(proc, rss)
    t_end = time.time()
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    epochs = [ln for ln in lines if "epoch" in ln]
    r = _summarise_epochs("course", model, seed, t0, t_end, peak, epochs)
    r["loop_images_per_s"] = next(ln["images_per_s"] for ln in lines if "images_per_s" in ln)
    return r


def run_cnnlab(arm: str, model: str, seed: int, budget: float | None, extra: tuple[str, ...] = ()) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        args = ["-m", "cnnlab", "train", "--model", model, "--seed", str(seed), "--out", tmp, "--no-progress", *extra]
        if budget:
            args += ["--time-budget", str(budget)]
        rss = str(Path(tmp) / "rss")
        t0, proc = _launch(args, rss)
        out, peak = _finish(proc, rss)
        t_end = time.time()
        (metrics,) = Path(tmp).glob("*/metrics.csv")
        with open(metrics, newline="") as f:
            epochs = [{"test_acc": float(r["test_acc"]), "time": float(r["time"])} for r in csv.DictReader(f)]
        summary = json.loads(next(Path(tmp).glob("*/summary.json")).read_text())
    r = _summarise_epochs(arm, model, seed, t0, t_end, peak, epochs)
    r["budget"] = budget
    r["test_acc"] = summary["test_acc"]  # the run's reported result: the epoch validation chose
    r["steps"] = summary.get("epochs")
    r["said"] = [ln for ln in out.splitlines() if "cores busy" in ln or "slower than" in ln or "free again" in ln]
    return r


# Runs `cnnlab train ARGS` as the command does (cnnlab.cli.entry) and prints, on stderr as "phase <name> <seconds
# since the benchmark started the process>", when `import torch` ends, when training starts and ends
# (cnnlab.train.loop.train_one_epoch), when the run's files start being written (RunWriter.finish: summary.json and
# curves.png) and when its last exit handler runs. The marks wrap cnnlab's own functions in this process only; they
# change nothing a run computes.
_PHASES_WRAPPER = """
import atexit, os, sys, time
T0 = float(os.environ["CNNLAB_BENCH_T0"])  # the benchmark's clock just before it started this process
def since():
    return time.time() - T0
def mark(name):
    print(f"phase {name} {since():.3f}", file=sys.stderr, flush=True)
from cnnlab.cli import GOMP_SPINCOUNT, entry  # imports no torch
os.environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT)  # before torch loads libgomp, as entry() sets it
import torch
mark("imported torch")
from cnnlab.train import loop
from cnnlab.runs import writer
def wrap(owner, attr, before, after):
    f = getattr(owner, attr)
    def wrapped(*a, **k):
        mark(before)
        try:
            return f(*a, **k)
        finally:
            mark(after)
    setattr(owner, attr, wrapped)
wrap(loop, "train_one_epoch", "training starts", "training ends")
wrap(writer.RunWriter, "finish", "writing starts", "written")
import cnnlab.train.run as run_module
run_module.train_one_epoch = loop.train_one_epoch
atexit.register(mark, "exit")
sys.argv = ["cnnlab", *sys.argv[1:]]
entry()  # as the cnnlab command runs: its OpenMP spin count, no last garbage collection at exit
"""


def run_phases(model: str, seed: int, budget: float) -> dict:
    """One `cnnlab train --time-budget` run, its phases timed from process start (seconds), the wall time with it."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["train", "--model", model, "--seed", str(seed), "--out", tmp, "--no-progress", "--time-budget", str(budget)]
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-c", _PHASES_WRAPPER, *args], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONUNBUFFERED="1", CNNLAB_BENCH_T0=repr(t0)))
        wall = time.time() - t0
    if proc.returncode != 0:
        raise ProcessFailed("cnnlab train (phases)", proc.returncode, proc.stderr)
    marks: dict[str, float] = {}  # the first "training starts", the last of every other mark
    for line in proc.stderr.splitlines():
        if line.startswith("phase "):
            name, _, at = line[len("phase "):].rpartition(" ")
            if name != "training starts" or name not in marks:
                marks[name] = float(at)
    return dict(model=model, seed=seed, budget=budget, wall_seconds=wall, marks=marks)


def phases_section(results: dict) -> str:
    rows = []
    for model, per in results["models"].items():
        ph = per.get("phases")
        if not ph or "failed" in ph:
            continue
        m = ph["marks"]
        parts = [("Python start-up and `import torch`", 0.0, m["imported torch"]),
                 ("cnnlab's imports, data from the cache, model built", m["imported torch"], m["training starts"]),
                 ("training (with any earlier epoch's evaluation)", m["training starts"], m["training ends"]),
                 ("the last evaluation (validation and test) and the checkpoints", m["training ends"], m["writing starts"]),
                 ("summary.json and curves.png (matplotlib imported)", m["writing starts"], m["written"]),
                 ("the table, then exit", m["written"], m["exit"])]
        for name, a, b in parts:
            rows.append([model, name, f"{b - a:.2f} s", f"{100 * (b - a) / ph['wall_seconds']:.0f}%"])
        rows.append([model, "Python's shutdown after the last exit handler", f"{ph['wall_seconds'] - m['exit']:.2f} s",
                     f"{100 * (ph['wall_seconds'] - m['exit']) / ph['wall_seconds']:.0f}%"])
        rows.append([model, "from process start to exit", f"{ph['wall_seconds']:.2f} s", "100%"])
    if not rows:
        return ""
    return ("Where the seconds of one such run go (seed 0 at that budget, one more run timed phase by phase from the\n"
            "moment the benchmark started it):\n\n"
            + format_table(["model", "phase", "seconds", "share"], rows, markdown=True))


def budget_search(model: str, budgets: list[float], seeds: int, done: dict, save, run=run_cnnlab) -> dict:
    """Each budget in turn, `seeds` runs each, until one at which every run ends at >= 99.0% test accuracy; a
    budget is left at its first run below (or failed). `done` (budget -> runs) keeps what a --resume found;
    `run(arm, model, seed, budget)` trains one (a process of `cnnlab train`)."""
    for budget in budgets:
        runs = done.setdefault(f"{budget:g}", [])
        while len(runs) < seeds and all(r.get("test_acc", 0) >= TARGET_ACC for r in runs):
            r = attempt_run(run, "budget", model, len(runs), budget)
            r.setdefault("budget", budget)
            runs.append(r)
            save()
            acc = f"{100 * r['test_acc']:.2f}%" if "test_acc" in r else r["failed"]
            print(f"{model} budget {budget:g} s seed {len(runs) - 1}: {acc}, wall {r.get('wall_seconds', float('nan')):.1f} s", flush=True)
        if len(runs) == seeds and all(r.get("test_acc", 0) >= TARGET_ACC for r in runs):
            return {"budget": budget, "runs": runs}
    return {}


def busy_runs(model: str, repeats: int, done: dict, save) -> None:
    """`cnnlab train --model M --steps BUSY_STEPS` idle, beside one busy core and beside two, with the default
    threads (kept for the whole run) and with --adapt-threads; `repeats` runs of each, alternating, into
    done[condition]."""
    adapt = ("--adapt-threads",)
    conditions = [("idle", 0, ()), ("idle, --adapt-threads", 0, adapt), ("1 core busy", 1, ()),
                  ("1 core busy, --adapt-threads", 1, adapt), ("2 cores busy", 2, ()), ("2 cores busy, --adapt-threads", 2, adapt)]
    for i in range(repeats):
        for name, spinners, extra in conditions:
            runs = done.setdefault(name, [])
            if len(runs) > i:
                continue
            spin = [subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 600: pass"])
                    for _ in range(spinners)]
            try:
                time.sleep(0.5 if spinners else 0)
                r = attempt_run(run_cnnlab, "busy", model, i, None, ("--steps", str(BUSY_STEPS), *extra))
            finally:
                for p in spin:
                    p.kill()
                    p.wait()
            r["condition"] = name
            runs.append(r)
            save()
            print(f"{model} {name}: wall {r.get('wall_seconds', float('nan')):.1f} s {r.get('said', r.get('failed'))}", flush=True)


# ---- in-process measurements ---------------------------------------------------------------------


def matmul_rate(sizes=(2048, 4096), repeats: int = 7) -> dict:
    """fp32 GFLOP/s of torch.mm on square matrices: the median of `repeats` per size."""
    rates = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t)
        rates[n] = 2 * n**3 / statistics.median(ts) / 1e9
    return {"per_size": rates, "gflops": max(rates.values())}


def precision_here() -> str:
    """What `cnnlab train`'s steps compute in on this CPU with the default --amp auto (bfloat16 where the CPU has
    bfloat16 instructions)."""
    return training_precision(torch.device("cpu"), make_spec("resnet").config.amp)


def step_flops(model_name: str, batch: int = 64) -> float:
    """FLOPs per image of one training step (forward + backward), counted by torch.utils.flop_counter."""
    model = create_model(model_name)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch


def _training_steps(model_name: str, data, device: str = "cpu", world: World = SINGLE, **overrides):
    """cnnlab's training step on real batches, built as a run builds it (train/parts.build_parts: the default
    recipe, with `overrides`; in a data-parallel `world`, DDP and this rank's part of each batch); returns
    run(steps) -> images trained on by all ranks together. The rate is THROUGHPUT_LR unless given: these steps
    are timed, and a step costs the same at any rate."""
    spec = make_spec(model_name, device=device, **{"lr": THROUGHPUT_LR, **overrides})
    dev = torch.device(device)
    configure(dev)
    parts = build_parts(spec, data, world, dev, time.perf_counter())
    hooks = StepHooks([])

    def run(steps: int) -> int:
        parts.plan.total_steps = steps
        position = EpochPosition(parts.generator.get_state(), parts.optimizer.param_groups[0]["lr"])
        _, _, n = train_one_epoch(parts, 1, hooks, position)
        return n * parts.cfg.batch_size  # train_one_epoch ends with a host sync (an all-reduce across ranks)

    return run


def cnnlab_throughput(model_name: str, data, steps: int = 60, repeats: int = 3, device: str = "cpu", **overrides) -> float:
    """Images/s of cnnlab's training step on real batches (augmentation, channels_last forward and
    backward, optimiser, schedule): the best of `repeats` timed runs of `steps` steps, after one warm-up run."""
    run = _training_steps(model_name, data, device, **overrides)
    run(steps)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        images = run(steps)
        rates.append(images / (time.perf_counter() - t))
    return max(rates)


def profile_step(model_name: str, data, steps: int = 20, top: int = 8) -> list[dict]:
    """Where a default training step spends its time: the `top` operators (by input shapes) with the most
    self CPU time, each with its share of the step (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    run = _training_steps(model_name, data)
    run(5)  # warm-up
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run(steps)
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = []
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        shapes = [list(s) for s in (e.input_shapes or []) if s][:2]
        rows.append(dict(op=e.key, shapes=shapes, share=e.self_cpu_time_total / total))
    return rows


def course_throughput(model_name: str, data, steps: int = 100) -> float:
    """Images/s of the course's step, batch fetching included, median over `steps` steps."""
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    model = create_model(model_name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    loader = DataLoader(CourseMNIST(data.train_images, data.train_labels), batch_size=64, shuffle=True)
    times = []
    t_prev = time.perf_counter()
    for i, (x, y) in enumerate(loader):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        now = time.perf_counter()
        if i >= 10:
            times.append(now - t_prev)
        t_prev = now
        if i >= steps + 10:
            break
    return 64 / statistics.median(times)


# ---- report -----------------------------------------------------------------------------------------


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _ok(runs: list[dict]) -> list[dict]:
    return [r for r in runs if "failed" not in r]


def summarise(results: dict) -> list[dict]:
    """One row per model and arm (course, default): the runs that finished, and how many failed."""
    rows = []
    mm = results["matmul"]["gflops"]
    for model, per in results["models"].items():
        course_wall = _median([r["wall_seconds"] for r in _ok(per.get("course", []))])
        for arm in ("course", "default"):
            runs = _ok(per.get(arm, []))
            failed = len(per.get(arm, [])) - len(runs)
            if not runs:
                if failed:
                    rows.append(dict(model=model, arm=arm, runs=0, failed=failed, reason=per[arm][0]["failed"]))
                continue
            reached = [r["time_to_99"] for r in runs]
            t99 = _median(reached) if all(x is not None for x in reached) else None
            ips = per["throughput"]["course" if arm == "course" else "cnnlab"]
            gflops = ips * per["step_flops"] / 1e9
            rows.append(dict(
                model=model, arm=arm, runs=len(runs), failed=failed, epochs=_median([r["epochs"] for r in runs]),
                reached=sum(x is not None for x in reached), time_to_99=t99,
                speedup=(course_wall / t99) if (course_wall and t99) else None,
                final_acc=_median([r["final_test_acc"] for r in runs]), wall=_median([r["wall_seconds"] for r in runs]),
                images_per_s=ips, gflops=gflops, of_matmul=gflops / mm, peak_rss_mb=max(r["peak_rss_mb"] for r in runs),
            ))
    return rows


def budget_rows(results: dict) -> list[dict]:
    """Per model: the smallest budget at which all its seeds reached 99.0%, their median wall time, and the course."""
    rows = []
    for model, per in results["models"].items():
        course_wall = _median([r["wall_seconds"] for r in _ok(per.get("course", []))])
        tried = per.get("budgets", {})
        found = per.get("budget_found") or {}
        runs = found.get("runs", [])
        wall = _median([r["wall_seconds"] for r in runs]) if runs else None
        rows.append(dict(
            model=model, budget=found.get("budget"), wall=wall, walls=[r["wall_seconds"] for r in runs],
            accs=[r["test_acc"] for r in runs], course=course_wall,
            speedup=course_wall / wall if (course_wall and wall) else None,
            slowest=course_wall / max(r["wall_seconds"] for r in runs) if (course_wall and runs) else None,
            tried=[(b, [r.get("test_acc") for r in rs], [r["failed"] for r in rs if "failed" in r]) for b, rs in tried.items()],
        ))
    return rows


def busy_rows(results: dict) -> list[dict]:
    busy = results.get("busy", {})
    idle = _median([r["wall_seconds"] for r in _ok(busy.get("idle", []))])
    rows = []
    for name, runs in busy.items():
        ok = _ok(runs)
        wall = _median([r["wall_seconds"] for r in ok])
        said = next((ln for r in ok for ln in r.get("said", [])), "")
        rows.append(dict(condition=name, runs=len(ok), failed=len(runs) - len(ok), wall=wall,
                         walls=[r["wall_seconds"] for r in ok], ratio=wall / idle if (wall and idle) else None, said=said))
    return rows


def _precision_line(results: dict) -> str:
    """What cnnlab's training steps computed in, beside the course loop's float32 (results from before it was recorded:
    nothing, as they were written)."""
    precision = results.get("precision")
    if precision is None:
        return ""
    why = " (`--amp auto` on a CPU with bfloat16 instructions)" if precision == "bfloat16" else ""
    return f"  \ncnnlab's training steps ran in {precision}{why}, its evaluation in float32; the course loop in float32."


def _float32_lines(results: dict) -> str:
    """cnnlab's step in float32 (`--amp off`) beside its default one, where the run measured both."""
    lines = []
    for model, per in results["models"].items():
        t = per.get("throughput", {})
        if "cnnlab_float32" in t:
            lines.append(f"- `{model}`: {t['cnnlab']:.0f} images/s in {results['precision']} against {t['cnnlab_float32']:.0f} in "
                         f"float32 (`--amp off`), {t['cnnlab'] / t['cnnlab_float32']:.2f}x")
    if not lines:
        return ""
    return f"\ncnnlab's training step in {results['precision']} (the default here) and in float32, measured alike in this run:\n\n" + "\n".join(lines) + "\n"


def render_markdown(results: dict) -> str:
    rows = summarise(results)
    seeds = ", ".join(str(i) for i in range(SEEDS_PER_BUDGET))
    mm = results["matmul"]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    headers = [
        "model", "arm", "runs", "epochs", "time to 99.0%", "course 10 ep / that", "test acc at end", "wall",
        "train img/s", "GFLOP/s", "of matmul", "peak RSS",
    ]
    table = []
    for r in rows:
        if not r["runs"]:
            table.append([r["model"], r["arm"], f"0 ({r['failed']} failed: {r['reason']})"] + ["-"] * 9)
            continue
        t99 = fmt(r["time_to_99"], ".1f") + " s" if r["time_to_99"] is not None else f"not reached ({r['reached']}/{r['runs']})"
        runs = f"{r['runs']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
        table.append([
            r["model"], r["arm"], runs, fmt(r["epochs"], "g"), t99, fmt(r["speedup"], ".1f") + "x" if r["speedup"] else "-",
            f"{100 * r['final_acc']:.2f}%", f"{r['wall']:.0f} s", f"{r['images_per_s']:.0f}",
            f"{r['gflops']:.1f}", f"{100 * r['of_matmul']:.0f}%", f"{r['peak_rss_mb']:.0f} MB",
        ])
    btable = []
    for r in budget_rows(results):
        accs = ", ".join(f"{100 * a:.2f}" for a in r["accs"])
        spread = f"{100 * (max(r['accs']) - min(r['accs'])):.2f}" if r["accs"] else "-"
        slowest = r["slowest"]
        btable.append([r["model"], fmt(r["budget"], "g") + " s" if r["budget"] else "none of those tried",
                       f"{r['wall']:.1f} s ({min(r['walls']):.1f}..{max(r['walls']):.1f})" if r["wall"] else "-", accs or "-",
                       spread, fmt(r["course"], ".0f") + " s", fmt(r["speedup"], ".1f") + "x" if r["speedup"] else "-",
                       fmt(slowest, ".1f") + "x" if slowest else "-"])
    tried = "\n".join(
        f"- `{r['model']}`: " + "; ".join(
            f"{b} s: " + ", ".join("failed" if a is None else f"{100 * a:.2f}%" for a in accs) for b, accs, _ in r["tried"])
        for r in budget_rows(results) if r["tried"])
    busy = busy_rows(results)
    ztable = [[r["condition"], f"{r['runs']}" + (f" ({r['failed']} failed)" if r["failed"] else ""),
               f"{r['wall']:.1f} s ({min(r['walls']):.1f}..{max(r['walls']):.1f})" if r["wall"] else "-",
               fmt(r["ratio"], ".2f") + "x" if r["ratio"] else "-", r["said"] or "-"] for r in busy]
    sizes = ", ".join(f"{n}: {g:.0f}" for n, g in mm["per_size"].items())
    busy_section = f"""## Beside other programs: idle against busy cores

`cnnlab train --model resnet --steps {BUSY_STEPS} --no-progress`, wall time from process start to exit (median, with
min..max), on the idle machine and beside one or two processes that each keep a core busy (a Python loop),
alternating conditions. *Default threads*: PyTorch's count, kept for the whole run, so that a seeded run repeats to
the digit whatever else runs; `--adapt-threads` fits them to the free cores as the run goes (train/cores.py). *What
the run said*: its line about the cores.

{format_table(["condition", "runs", "wall", "x idle", "what the run said"], ztable, markdown=True)}
""" if busy else ""
    return f"""# Training speed: the course's loop against cnnlab

Machine: {results['machine']}.  
Command: `{results['command']}` (run from the repository root, nothing else running).  
fp32 matrix-product rate of these cores, torch.mm, median of 7 (GFLOP/s by size): {sizes}; the
fraction below is of the best, {mm['gflops']:.0f} GFLOP/s.{_precision_line(results)}

## Time to 99.0%, as a user meets it

*Budget*: the smallest `--time-budget B` (of those tried, smallest first) at which `cnnlab train --model M
--time-budget B` ended at >= 99.0% test accuracy for each of {SEEDS_PER_BUDGET} seeds ({seeds}); *wall*: the median of
those runs' wall time from process start (Python start-up, imports, data from the cache) to exit (the final
evaluation, checkpoint, curves.png and table included), with min..max; *spread*: the highest seed's test accuracy
less the lowest's, in points; *course*: the wall time of the course loop's 10 epochs (benchmarks/course_loop.py) in
the same benchmark run; *course / slowest*: the same against the slowest of the seeds' runs.

{format_table(["model", "budget", "wall to exit", f"test acc % (seeds {seeds})", "spread", "course 10 ep", "course / median", "course / slowest"], btable, markdown=True)}

{phases_section(results)}

Budgets tried (test accuracy of each seed; a budget is left at its first run below 99.0%):

{tried}

{busy_section}
## Every arm

Each row is a separate process started by the benchmark, data from the cache. *Time to 99.0%*: wall time
from process start (Python start-up, data load, model build included) to the end of the first epoch whose
test accuracy is >= 99.0%, evaluation included; median over the runs (seeds 0, 1, 2, ...).
*course 10 ep / that*: the course loop's whole 10-epoch wall time divided by that time. *Test acc at end*:
the last epoch's, median. *Train img/s*: steady-state training throughput measured in the benchmark's own
process (cnnlab: its default training step with augmentation, timed at lr {THROUGHPUT_LR:g} so that no setting
can diverge, best of 3 x 60 steps; course: the median step with its DataLoader, batch fetching included);
*GFLOP/s* = img/s x FLOPs of one training step per image (forward and backward, torch.utils.flop_counter).
*Peak RSS*: the training process's maximum resident memory (VmHWM, read by the process itself at exit); the
largest over its runs.

{format_table(headers, table, markdown=True)}
{_float32_lines(results)}
## Against the targets

{targets(rows, budget_rows(results), busy)}

## Where a training step's time goes

The operators with the most self time in 20 default training steps (batch 128, channels_last; torch.profiler),
with their share of the step's time.

{profiles(results)}
"""


def targets(rows: list[dict], budgets: list[dict], busy: list[dict]) -> str:
    lines = []
    for b in budgets:
        goal, moon = SPEEDUP_TARGETS.get(b["model"], (10, 20))
        if b["speedup"]:
            every = b["slowest"]  # the target holds for every seed: its slowest run counts
            lines.append(
                f"- `{b['model']}` reaches 99.0% on each of {len(b['walls'])} seeds with `--time-budget {b['budget']:g}`, in "
                f"{b['wall']:.1f} s from process start to exit (median; slowest {max(b['walls']):.1f} s): {b['speedup']:.1f}x "
                f"sooner than the course loop's 10 epochs ({b['course']:.0f} s), {every:.1f}x for the slowest seed: target "
                f"{goal}x for every seed {'met' if every >= goal else 'not met'}, moonshot {moon}x "
                f"{'met' if every >= moon else 'not met'}.")
        else:
            lines.append(f"- `{b['model']}`: no budget tried reached 99.0% on every seed (or no course run): target {goal}x not shown.")
    for r in busy:
        if r["condition"] == "1 core busy" and r["ratio"]:
            lines.append(f"- Beside one busy core a run takes {r['ratio']:.2f}x its idle time with the default threads "
                         f"(target: at most about 2x): {'met' if r['ratio'] <= 2.2 else 'not met'}.")
        if r["condition"] == "1 core busy, --adapt-threads" and r["ratio"]:
            lines.append(f"- Beside one busy core a run takes {r['ratio']:.2f}x its idle time with --adapt-threads.")
    for r in rows:
        if r["arm"] == "course" or not r["runs"]:
            continue
        rss = r["peak_rss_mb"]
        lines.append(f"- `{r['model']}` peak resident memory while training: {rss:.0f} MB (target <= 1,536 MB: "
                     f"{'met' if rss <= 1536 else 'not met'}).")
    return "\n".join(lines)


def profiles(results: dict) -> str:
    out = []
    for model, per in results["models"].items():
        if "profile" not in per:
            continue
        rows = [[p["op"], " ".join("x".join(map(str, s)) for s in p["shapes"]), f"{100 * p['share']:.1f}%"] for p in per["profile"]]
        out.append(f"`{model}`:\n\n" + format_table(["operator", "input shapes (first two)", "share of step"], rows, markdown=True))
    return "\n\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=["resnet", "inception_net"],
                   help="the models of every arm but busy; none given: the busy arm alone (default: resnet inception_net)")
    p.add_argument("--course-runs", type=int, default=1, help="runs of the course loop per model (default: 1)")
    p.add_argument("--default-runs", type=int, default=1, help="runs of the default recipe per model (default: 1)")
    p.add_argument("--budget-seeds", type=int, default=SEEDS_PER_BUDGET,
                   help=f"seeds that must each reach 99.0%% at a budget (default: {SEEDS_PER_BUDGET})")
    p.add_argument("--busy-runs", type=int, default=2, help="runs of each busy-machine condition, resnet (default: 2; 0 = none)")
    p.add_argument("--out", default=str(HERE / "results"), help="(default: benchmarks/results)")
    p.add_argument("--resume", action="store_true", help="keep what speed.json already holds (default: off)")
    p.add_argument("--report-only", action="store_true", help="rewrite speed.md from speed.json, run nothing")
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "speed.json"
    if args.report_only:
        write_file(out / "speed.md", render_markdown(json.loads(json_path.read_text())))
        print(f"wrote {out / 'speed.md'} from {json_path}")
        return 0
    results = json.loads(json_path.read_text()) if args.resume and json_path.exists() else {}
    results["machine"] = describe_machine()
    results["command"] = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    results.setdefault("models", {})
    results["precision"] = precision_here()

    def save() -> None:
        write_json(json_path, results)

    configure(torch.device("cpu"))
    results["matmul"] = matmul_rate()
    print(f"fp32 matmul: {results['matmul']['gflops']:.0f} GFLOP/s", flush=True)
    data = load_mnist(progress=False)
    for model in args.models:
        per = results["models"].setdefault(model, {})
        per["step_flops"] = step_flops(model)
        per["throughput"] = {"cnnlab": cnnlab_throughput(model, data), "course": course_throughput(model, data)}
        if results["precision"] != "float32":  # the same step in float32 beside it: what autocast gains here
            per["throughput"]["cnnlab_float32"] = cnnlab_throughput(model, data, amp="off")
        per["profile"] = profile_step(model, data)
        print(f"{model}: {per['step_flops'] / 1e6:.1f} MFLOP per image per step; img/s {per['throughput']}", flush=True)
        save()
        for arm, n in (("course", args.course_runs), ("default", args.default_runs)):
            runs = per.setdefault(arm, [])
            for seed in range(len(runs), n):
                r = attempt_run(run_course, model, seed) if arm == "course" else attempt_run(run_cnnlab, arm, model, seed, None)
                runs.append(r)
                save()
                if "failed" in r:
                    print(f"{model} {arm} seed {seed}: failed: {r['failed']}", flush=True)
                    continue
                t99 = "not reached" if r["time_to_99"] is None else f"{r['time_to_99']:.1f}s"
                print(f"{model} {arm} seed {seed}: 99.0% at {t99}, end {100 * r['final_test_acc']:.2f}%, "
                      f"wall {r['wall_seconds']:.0f}s, peak {r['peak_rss_mb']:.0f} MB", flush=True)
        per["budget_found"] = budget_search(model, BUDGETS[model], args.budget_seeds, per.setdefault("budgets", {}), save)
        if per["budget_found"]:
            per["phases"] = attempt_run(run_phases, model, 0, per["budget_found"]["budget"])
        save()
    if args.busy_runs:
        busy_runs("resnet", args.busy_runs, results.setdefault("busy", {}), save)
    write_file(out / "speed.md", render_markdown(results))
    print()
    print(render_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
