"""Scale-out benchmark: data-parallel training on torch.distributed, 1 process against 2, on this machine.

    python benchmarks/distributed.py                     # every model, batch 128, then the all-reduce sweep
    python benchmarks/distributed.py --models resnet --steps 30

For each model, each arrangement a fresh set of processes started from here (the 2-process one by
torchrun, gloo on 127.0.0.1), it measures the steady-state training throughput of cnnlab's real step
(augmentation, forward, backward, DDP's gradient all-reduce, optimiser) at one global batch size:
  1 proc x 2 threads   all cores in one process: what `cnnlab train` does here
  1 proc x 1 thread    one core: the compute per step that each process of a 2-process run faces
  2 procs x 1 thread   `torchrun --nproc-per-node 2`: each process half of every batch
Then, in 2 processes, the time of one all-reduce of each model's gradient (its parameter count in
float32) and of a sweep of sizes, from which a latency + size/bandwidth line is fitted. From these it
works out what limits scaling for models this small and from which size more machines pay off.

Every timed step runs at lr 1e-4 (machine.TIMING_LR): at the recipe's rate a model can diverge part-way, and a
step costs the same at any lr. A measurement that fails (a process exits non-zero, any error) is recorded with its
reason and the benchmark goes on (machine.attempt).

Writes benchmarks/results/distributed.json and distributed.md. Run it alone: on 2 cores any other load
changes every figure.

    python benchmarks/distributed.py --failure           # what a lost worker costs, and two namespaces' speed

--failure measures instead what losing a worker costs a run under `torchrun --max-restarts 1` (2 processes): one
worker is killed (kill -9) 90% through epoch 2, the agent starts the group again and the run resumes from
last.pt. For --checkpoint-every 10 against once an epoch it reports the seconds from the kill to the first
steps trained again and the steps lost (trained before the kill, after the checkpoint resumed from). Then the
images/s of the README's two-machine command on two network namespaces (1 process each, over a veth pair)
against one process with one thread, and one with two. Writes distributed_failure.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import TIMING_LR, ProcessFailed, attempt, describe_machine, failure_of, timing_lr_note, write_json, write_results  # noqa: E402
from speed import _training_steps, step_flops  # noqa: E402

from cnnlab.data import load_mnist  # noqa: E402
from cnnlab.models import count_parameters, create_model, lecture_models  # noqa: E402
from cnnlab.tables import format_table  # noqa: E402
from cnnlab.train import distributed  # noqa: E402

ARRANGEMENTS = (("1 proc x 2 threads", 1, 2), ("1 proc x 1 thread", 1, 1), ("2 procs x 1 thread", 2, 1))
SWEEP = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)  # float32 elements per all-reduce


# ---- children: run by this script in fresh processes, alone or under torchrun ---------------------


def child_throughput(model: str, batch: int, steps: int, repeats: int, threads: int, result: str) -> None:
    """Images/s of the whole world (median of `repeats` timed runs of `steps` steps, after a warm-up run)."""
    world, dev = distributed.init(torch.device("cpu"))
    torch.set_num_threads(threads)
    with distributed.local_main_first(world):
        data = load_mnist(progress=False)
    run = _training_steps(model, data, "cpu", world, batch_size=batch, lr=TIMING_LR)
    run(max(5, steps // 4))
    rates = []
    for _ in range(repeats):
        distributed.barrier(world)
        t = time.perf_counter()
        images = run(steps)  # ends with an all-reduce of the epoch's metrics: every rank is done
        rates.append(images / (time.perf_counter() - t))
    if world.is_main:
        Path(result).write_text(json.dumps({"images_per_s": statistics.median(rates), "rates": rates}))
    distributed.shutdown()


def child_allreduce(sizes: list[int], repeats: int, result: str) -> None:
    """Median seconds of one all-reduce (sum) of a float32 tensor of each size, over the world."""
    import torch.distributed as dist

    world, _ = distributed.init(torch.device("cpu"))
    torch.set_num_threads(1)
    out = {}
    for n in sizes:
        t = torch.ones(n)
        for _ in range(3):
            dist.all_reduce(t)
        times = []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            times.append(time.perf_counter() - t0)
        out[str(n)] = statistics.median(times)
    if world.is_main:
        Path(result).write_text(json.dumps(out))
    distributed.shutdown()


def child_steps(model: str, batch: int, epochs: int, steps: int, every: float, out: str, result: str) -> None:
    """Train through cnnlab.train.train (a named run, as `cnnlab train` under torchrun), logging the wall time of
    every 10th step on rank 0 to `result` (one "unix-time step" line each)."""
    from cnnlab.train import Observer, make_config, train

    class StepLog(Observer):
        def __init__(self) -> None:
            self.f = open(result, "a")

        def step(self, step: int, total_steps: int, epoch: int, loss: float) -> None:
            self.f.write(f"{time.time():.3f} {step}\n")
            self.f.flush()

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = make_config(model, epochs=epochs, steps=steps, batch_size=batch, device="cpu", log_every=10, checkpoint_every=every,
                      lr=TIMING_LR)  # timed steps and a restart's cost, at a rate that cannot diverge
    train([cfg], out_root=out, progress=False, observers=[StepLog()])
    if distributed.joined():
        distributed.leave(0)


def _step_log(path: Path) -> list[tuple[float, int]]:
    if not path.exists():
        return []
    return [(float(t), int(s)) for t, s in (line.split() for line in path.read_text().splitlines() if line.count(" ") == 1)]


def failure_cost(model: str, batch: int, every: float) -> dict:
    """Kill rank 1 of a 2-process run 90% through epoch 2; what the restart costs."""
    from cnnlab.data import load_mnist

    per_epoch = (len(load_mnist(progress=False).train_images) - 5000) // batch
    kill_at = per_epoch + per_epoch * 9 // 10  # late in epoch 2: past a 10 s interval at this machine's speed
    with tempfile.TemporaryDirectory() as tmp:
        log, out = Path(tmp) / "steps.log", Path(tmp) / "runs"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--max-restarts=1",
               "--monitor-interval=0.1", str(Path(__file__).resolve()), "--child", "steps", "--model", model,
               "--batch", str(batch), "--epochs", "2", "--steps", "0", "--every", str(every), "--runs", str(out), "--result", str(log)]
        p = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + 600
        while not _step_log(log) or _step_log(log)[-1][1] < kill_at:
            if p.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the run ended before step {kill_at}")
            time.sleep(0.01)
        workers = [pid for pid in _children(p.pid) if b"RANK=1" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")]
        os.kill(workers[0], 9)
        t_kill = time.time()
        (ckpt,) = out.glob("*/last.pt")
        resumed_from = torch.load(ckpt, weights_only=True)["steps"]
        if p.wait(timeout=900) != 0:
            raise RuntimeError(f"the run under --max-restarts 1 did not survive (exit {p.returncode})")
        steps = _step_log(log)
        before = max(s for t, s in steps if t <= t_kill)
        t_again, first = min((t, s) for t, s in steps if t > t_kill)
    return {"checkpoint_every": every, "killed_after_step": before, "resumed_from_step": resumed_from,
            "steps_lost": before - resumed_from, "seconds_to_training_again": t_again - t_kill, "first_step_again": first,
            "seconds_lost_of_training": (before - resumed_from) * _seconds_per_step(steps, t_kill)}


def _seconds_per_step(steps: list[tuple[float, int]], until: float) -> float:
    """Median seconds per step over the logged intervals before `until` (the run's speed before the kill)."""
    pts = [(t, s) for t, s in steps if t <= until]
    return statistics.median((b[0] - a[0]) / (b[1] - a[1]) for a, b in zip(pts, pts[1:]) if b[1] > a[1])


def _children(pid: int) -> list[int]:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from support.processes import descendants

    return descendants(pid)


def namespace_speed(model: str, batch: int, steps: int) -> dict:
    """Images/s of the README's two-machine command on two network namespaces (1 process each), against one
    process with one thread and with two, on the same steps; an arrangement that fails: {"failed": reason}."""
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        child = ["--child", "steps", "--model", model, "--batch", str(batch), "--steps", str(steps), "--epochs", "1"]
        for label, threads in (("1 proc x 1 thread", 1), ("1 proc x 2 threads", 2)):
            rate, failed = attempt(_speed_alone, child, threads, batch, Path(tmp))
            rates[label] = {"failed": failed} if failed else rate
        rate, failed = attempt(_speed_namespaces, child, batch, Path(tmp))
        rates["2 namespaces x 1 proc x 1 thread"] = {"failed": failed} if failed else rate
    return rates


def _speed_alone(child: list[str], threads: int, batch: int, tmp: Path) -> float:
    log = tmp / f"{threads}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), *child, "--runs", f"{tmp}/r{threads}", "--result", str(log)]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise ProcessFailed(f"distributed.py --child steps ({threads} threads)", proc.returncode, proc.stderr)
    return _rate(_step_log(log), batch)


def _speed_namespaces(child: list[str], batch: int, tmp: Path) -> float:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from train.test_two_machines import Machines, _agent, readme_two_machine_command

    machines = Machines()
    machines.make()
    try:
        words = readme_two_machine_command()
        cmd = _agent(words, [])[: -3]  # the torchrun options, without `-m cnnlab train`
        log = tmp / "ns.log"
        target = [*cmd, str(Path(__file__).resolve()), *child, "--runs", f"{tmp}/ns", "--result", str(log)]
        agents = []
        for n in ("node1", "node2"):
            with open(tmp / f"{n}.err", "w") as err:  # a file, not a pipe: nobody reads while they run
                agents.append(subprocess.Popen(machines.command(n, target), env={**os.environ, "OMP_NUM_THREADS": "1"},
                                               stdout=subprocess.DEVNULL, stderr=err))
        for a in agents:
            a.wait(timeout=900)
        for n, a in zip(("node1", "node2"), agents):
            if a.returncode != 0:
                raise ProcessFailed(f"torchrun on {n}", a.returncode, (tmp / f"{n}.err").read_text(errors="replace"))
        return _rate(_step_log(log), batch)
    finally:
        machines.remove()


def _rate(steps: list[tuple[float, int]], batch: int) -> float:
    """Images/s between the 3rd logged point and the last (past the first steps' allocations)."""
    (t0, s0), (t1, s1) = steps[2], steps[-1]
    return (s1 - s0) * batch / (t1 - t0)


def render_failure(r: dict) -> str:
    lines = [
        "# What a lost worker costs, and two machines' speed",
        "",
        f"`{r['command']}`; {r['model']}, batch {r['batch']}, real MNIST, one run each. CPU: {r['cpu']}.",
        "",
        f"Machine: {r['machine']}",
        "",
        "A 2-process run under `torchrun --standalone --nproc-per-node 2 --max-restarts 1`, rank 1 killed (`kill -9`)",
        "90% through epoch 2. *To training again*: from the kill to the first 10 steps trained after the",
        "restart (the agent noticing, stopping the group, starting it again, loading MNIST, resuming last.pt).",
        "*Steps lost*: trained before the kill, after the checkpoint the run resumed from.",
        "",
        "| checkpoints | killed after step | resumed from step | steps lost | training lost (s) | to training again (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    failures = []
    for c in r["failure"]:
        name = f"--checkpoint-every {c['checkpoint_every']:g}" if c["checkpoint_every"] else "once an epoch"
        if failure_of(c):
            lines.append(f"| {name} | failed | - | - | - | - |")
            failures.append(f"- the run with checkpoints {name}: failed: {failure_of(c)}")
            continue
        lines.append(f"| {name} | {c['killed_after_step']} | {c['resumed_from_step']} | {c['steps_lost']} | "
                     f"{c['seconds_lost_of_training']:.1f} | {c['seconds_to_training_again']:.1f} |")
    lr = f"; {timing_lr_note(r['throughput_lr'])}" if "throughput_lr" in r else ""
    lines += ["", f"Images/s over {r['speed_steps']} steps (timed from step 30 on{lr}):", "",
              "| arrangement | images/s |", "|---|---:|"]
    for k, v in r["speed"].items():
        lines.append(f"| {k} | {'failed' if failure_of(v) else f'{v:,.0f}'} |")
        if failure_of(v):
            failures.append(f"- {k}: failed: {failure_of(v)}")
    lines += ["", "The two namespaces share this host's cores, so they show what the network path and the",
              "rendezvous cost, not what a second machine adds.", ""]
    if failures:
        lines += ["Measurements that failed:", "", *failures, ""]
    return "\n".join(lines)


# ---- the parent: launches the children, collects, writes the report ----------------------------------


def _launch(nproc: int, child_args: list[str], threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        target = [str(Path(__file__).resolve()), "--child", *child_args, "--result", str(result)]
        if nproc == 1:
            cmd = [sys.executable, *target]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *target]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            launcher = f"torchrun --nproc-per-node {nproc}" if nproc > 1 else "python"
            raise ProcessFailed(f"{launcher} distributed.py --child {child_args[0]}", proc.returncode, proc.stderr)
        return json.loads(result.read_text())


def fit_line(points: dict[str, float]) -> tuple[float, float]:
    """Least-squares time = latency + bytes / bandwidth over the sweep: (latency s, bandwidth bytes/s)."""
    xs = [4 * int(n) for n in points]
    ys = list(points.values())
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return max(my - slope * mx, 0.0), 1 / slope


def render(r: dict) -> str:
    rows, analysis, failures = [], [], []
    allreduce_failed = failure_of(r["allreduce"])
    if allreduce_failed:
        failures.append(f"- the all-reduce sweep: failed: {allreduce_failed}")
    for m, res in r["models"].items():
        tps = [res["throughput"][a[0]] for a in ARRANGEMENTS]
        failed = [(a[0], failure_of(t)) for a, t in zip(ARRANGEMENTS, tps) if failure_of(t)]
        failures += [f"- {m}, {label}: failed: {why}" for label, why in failed]
        comm = None if allreduce_failed else r["allreduce"][str(res["parameters"])]
        comm_ms = "-" if comm is None else f"{1e3 * comm:.2f}"
        if failed:
            ips = ["failed" if failure_of(t) else f"{t['images_per_s']:,.0f}" for t in tps]
            rows.append([m, f"{res['parameters']:,}", *ips, "-", "-", comm_ms, "-"])
            continue
        one2, one1, two1 = (t["images_per_s"] for t in tps)
        step_1t = r["batch"] / one1  # seconds of compute for a whole global batch on one core
        rows.append([
            m, f"{res['parameters']:,}", f"{one2:,.0f}", f"{one1:,.0f}", f"{two1:,.0f}", f"{two1 / one2:.2f}x",
            f"{1e3 * step_1t / 2:.1f}", comm_ms, "-" if comm is None else f"{100 * comm / (step_1t / 2):.1f}%",
        ])
        if comm is not None:
            analysis.append((m, res, step_1t, comm))
    lr = f" {timing_lr_note(r['throughput_lr'])[0].upper()}{timing_lr_note(r['throughput_lr'])[1:]}." if "throughput_lr" in r else ""
    lines = [
        "# Data-parallel training: 1 process against 2",
        "",
        f"Machine: {r['machine']}. Command: `{r['command']}`. gloo on 127.0.0.1; global batch {r['batch']}, "
        f"{r['steps']} steps per timed run, median of {r['repeats']} runs after a warm-up; each arrangement a fresh "
        f"set of processes.{lr}",
        "",
        format_table(
            ["model", "params", "img/s 1p x 2t", "img/s 1p x 1t", "img/s 2p x 1t", "2p / 1p",
             "compute ms/step/proc", "all-reduce ms", "comm / compute"],
            rows, markdown=True,
        ),
        "",
        "- *img/s*: images per second of the whole run. *2p / 1p*: two processes of one thread each against one",
        "  process using both cores, which is what `cnnlab train` does on this machine.",
        "- *compute ms/step/proc*: half a global batch on one core (from the 1 proc x 1 thread run): the work each",
        "  of the 2 processes does per step. *all-reduce ms*: one all-reduce of the model's whole gradient",
        "  (parameters x 4 bytes) between the 2 processes, measured alone.",
        "",
        *(["Measurements that failed (their cells say so, and what depends on them is '-'):", "", *failures, ""] if failures else []),
    ]
    if allreduce_failed:
        lines += ["All-reduce between 2 processes on this machine: failed (above).", ""]
    else:
        lat, bw = r["allreduce_fit"]["latency_s"], r["allreduce_fit"]["bandwidth_bytes_per_s"]
        lines += [
            "All-reduce between 2 processes on this machine (median of "
            f"{r['allreduce_repeats']} each):",
            "",
            format_table(["floats", "bytes", "ms"], [[f"{int(n):,}", f"{4 * int(n):,}", f"{1e3 * t:.3f}"] for n, t in sorted(r["allreduce"].items(), key=lambda kv: int(kv[0]))], markdown=True),
            "",
            f"Fitted: time = {1e6 * lat:.0f} us + bytes / {bw / 1e9:.2f} GB/s (least squares over the sizes above).",
            "",
        ]
    lines += ["## What limits scaling here", ""]
    if not analysis:
        return "\n".join([*lines, "Not worked out: it needs a model's three arrangements and the all-reduce, and no model "
                           "has all of them (the failures are above).", ""])
    lines += [
        "- **Cores, not communication.** This machine has 2 cores: one process already uses both (intra-op",
        "  threads), so a second process can only win what one process loses to threading on small",
        "  convolutions. The gradients are tiny: "
        + ", ".join(f"{m} {res['parameters'] * 4 / 1e3:.0f} KB" for m, res, _, _ in analysis)
        + "; one all-reduce of them costs "
        + ", ".join(f"{1e3 * c:.2f} ms" for m, _, _, c in analysis)
        + f" here, against {min(1e3 * s / 2 for _, _, s, _ in analysis):.0f}-{max(1e3 * s / 2 for _, _, s, _ in analysis):.0f} ms "
        "of compute per step in each process.",
        "- **Two processes are not two cores' worth.** Two one-thread processes reach "
        + ", ".join(f"{res['throughput'][ARRANGEMENTS[2][0]]['images_per_s'] / res['throughput'][ARRANGEMENTS[1][0]]['images_per_s']:.2f}x"
                    for _, res, _, _ in analysis)
        + " the images/s of one (ideal: 2x), so more is lost than the all-reduce's share of a step: the two",
        "  processes share the caches and memory bandwidth of these 2 cores, gloo's threads run on the same",
        "  cores, and every step waits for the slower of the two. On this machine `cnnlab train` in one",
        "  process is the faster choice; torchrun pays off on more cores or more machines.",
        "- **Across machines** the gradient crosses a network instead of loopback. With N machines sharing a",
        "  global batch B, a step takes (B/N) x c + t_comm instead of B x c (c: compute per image), so adding",
        "  machines pays when each trains on more than t_comm / (c (N-1)) images per step. A ring all-reduce",
        "  moves 2(N-1)/N x the gradient's bytes through each machine's link and pays 2(N-1) latencies. With c",
        "  measured here (one core) and, assumed rather than measured, a 1 Gbit/s link with 0.1 ms latency, for",
        "  N = 2:",
        "",
    ]
    rows = []
    for m, res, step_1t, _ in analysis:
        per_image = step_1t / r["batch"]
        t_comm = 4 * res["parameters"] / (1e9 / 8) + 2 * 1e-4  # N = 2: 2(N-1)/N = 1 gradient's bytes, 2 latencies
        need = t_comm / per_image
        rows.append([
            m, f"{res['train_flops_per_image'] / res['parameters']:,.0f}", f"{1e3 * per_image:.3f}", f"{1e3 * t_comm:.2f}",
            f"{need:.0f}", "yes" if r["batch"] / 2 > need else "no",
        ])
    lines += [
        format_table(
            ["model", "train FLOPs/image/param", "compute ms/image", "t_comm ms (1 Gbit/s)", "break-even img/machine/step",
             f"pays at batch {r['batch']}"],
            rows, markdown=True,
        ),
        "",
        "  Both sides of the break-even grow with the parameter count, so what decides is the compute per",
        "  parameter per image (a convolution reuses each weight at every position of the image) and the",
        "  images each machine takes per step: a larger batch, a larger image or a faster link moves the line",
        "  down in proportion; more machines (N > 2) need fewer images each, as (N-1) grows, but never fewer",
        "  than what hides the fixed latencies.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=lecture_models())
    p.add_argument("--batch", type=int, default=128, help="global batch size (default: 128)")
    p.add_argument("--steps", type=int, default=40, help="steps per timed run (default: 40)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--report-only", action="store_true", help="re-render distributed.md from distributed.json")
    p.add_argument("--failure", action="store_true", help="what a lost worker costs, and two namespaces' images/s")
    p.add_argument("--child", choices=("throughput", "allreduce", "steps"), help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--every", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--runs", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--sizes", nargs="+", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child == "throughput":
        child_throughput(a.model, a.batch, a.steps, a.repeats, a.threads, a.result)
        return 0
    if a.child == "allreduce":
        child_allreduce(a.sizes, a.repeats, a.result)
        return 0
    if a.child == "steps":
        child_steps(a.model, a.batch, a.epochs, a.steps, a.every, a.runs, a.result)
        return 0
    if a.failure:
        from cnnlab.sysinfo import cpu_kind

        model = a.models[0] if len(a.models) == 1 else "resnet"
        results = {"machine": describe_machine(), "cpu": cpu_kind(), "torch": torch.__version__, "model": model,
                   "batch": a.batch, "command": "python benchmarks/distributed.py " + " ".join(sys.argv[1:]),
                   "throughput_lr": TIMING_LR, "speed_steps": 300, "failure": []}
        for every in (10.0, 0.0):
            cost, failed = attempt(failure_cost, model, a.batch, every)
            results["failure"].append(cost or {"checkpoint_every": every, "failed": failed})
        results["speed"] = namespace_speed(model, a.batch, 300)
        Path(a.out).mkdir(parents=True, exist_ok=True)
        write_json(Path(a.out, "distributed_failure.json"), results)  # kept if the report fails
        write_results(a.out, "distributed_failure", results, render_failure(results))
        return 0

    if a.report_only:
        results = json.loads((Path(a.out) / "distributed.json").read_text())
        write_results(a.out, "distributed", results, render(results))
        return 0
    results: dict = {
        "machine": describe_machine(), "command": "python benchmarks/distributed.py " + " ".join(sys.argv[1:]),
        "batch": a.batch, "steps": a.steps, "repeats": a.repeats, "torch": torch.__version__, "throughput_lr": TIMING_LR,
        "models": {},
    }
    for m in a.models:
        res = {"parameters": count_parameters(create_model(m)), "train_flops_per_image": step_flops(m), "throughput": {}}
        for label, nproc, threads in ARRANGEMENTS:
            args = ["throughput", "--model", m, "--batch", str(a.batch), "--steps", str(a.steps),
                    "--repeats", str(a.repeats), "--threads", str(threads)]
            rate, failed = attempt(_launch, nproc, args, threads)
            res["throughput"][label] = rate or {"failed": failed}
            print(f"{m}: {label}: " + (f"failed: {failed}" if failed else f"{rate['images_per_s']:,.0f} images/s"), flush=True)
        results["models"][m] = res
    sizes = sorted({*SWEEP, *(r["parameters"] for r in results["models"].values())})
    results["allreduce_repeats"] = 50
    times, failed = attempt(_launch, 2, ["allreduce", "--sizes", *map(str, sizes), "--repeats", "50"], 1)
    results["allreduce"] = times or {"failed": failed}
    if times:
        lat, bw = fit_line({n: t for n, t in times.items() if int(n) in SWEEP})
        results["allreduce_fit"] = {"latency_s": lat, "bandwidth_bytes_per_s": bw}
    else:
        print(f"all-reduce: failed: {failed}", flush=True)
    write_results(a.out, "distributed", results, render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
