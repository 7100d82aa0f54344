"""GPU speed: cnnlab's training on a CUDA device, the same arms as speed.py less the course loop.

    python benchmarks/gpu.py --data-dir DIR          # on a machine with a CUDA GPU

Measures, each run in a fresh process: the default recipe (`cnnlab train --model M --device cuda`) and
short `--time-budget` runs, with the wall time from process start to 99.0% test accuracy; then, in this
process, training throughput (images/s) of cnnlab's training step with bfloat16 autocast on and off and at
two batch sizes, at lr 1e-4 (machine.TIMING_LR) so that no setting can diverge (a step costs the same at any lr).
A run or measurement that fails is recorded with its reason and the benchmark goes on (machine.attempt).
Writes gpu.json and gpu.md to --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import TIMING_LR, attempt, count_with_failures, describe_machine, failure_of, timing_lr_note, write_results  # noqa: E402
from speed import cnnlab_throughput, run_cnnlab  # noqa: E402

from cnnlab.data import load_mnist  # noqa: E402
from cnnlab.tables import format_table  # noqa: E402
from cnnlab.device import configure  # noqa: E402

BUDGETS = {"resnet": (5.0, 10.0), "inception_net": (6.0, 12.0)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet", "inception_net"])
    p.add_argument("--data-dir", required=True, help="directory with the four MNIST files (gzipped or not)")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--budget-runs", type=int, default=3)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu.py: no CUDA GPU here", file=sys.stderr)
        return 1
    configure(torch.device("cuda"))
    results = {"machine": describe_machine(), "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
               "throughput_lr": TIMING_LR, "models": {}}
    data = load_mnist(args.data_dir, progress=False)
    extra = ("--device", "cuda", "--data-dir", args.data_dir)
    for model in args.models:
        per = results["models"][model] = {}
        per["throughput"] = {}
        for b in (128, 512):
            for amp in ("off", "bf16"):
                # TIMING_LR: the recipe's lr 0.05 diverged at batch 512 (no batch norm), and speed does not depend on it
                rate, failed = attempt(cnnlab_throughput, model, data, steps=100, repeats=1, device="cuda", batch_size=b,
                                       amp=amp, lr=TIMING_LR)
                per["throughput"][f"batch {b}, {amp}"] = {"failed": failed} if failed else rate
        print(model, per["throughput"], flush=True)
        arms = [("default", 0, None)] + [("budget", s, b) for b in BUDGETS[model] for s in range(args.budget_runs)]
        per["default"], per["budget"] = [], []
        for arm, seed, budget in arms:
            r, failed = attempt(run_cnnlab, arm, model, seed, budget, extra)
            per[arm].append(r or {"arm": arm, "model": model, "seed": seed, "budget": budget, "failed": failed})
            if failed:
                print(model, arm, budget, "seed", seed, "failed:", failed, flush=True)
            else:
                print(model, arm, budget, r["time_to_99"], r["final_test_acc"], round(r["wall_seconds"], 1), flush=True)
    write_results(args.out, "gpu", results, render(results))
    return 0


def render(results: dict) -> str:
    rows, failures = [], []
    for model, per in results["models"].items():
        groups: dict[str, list[dict]] = {}
        for r in per["default"] + per["budget"]:
            groups.setdefault("default" if r["arm"] == "default" else f"budget {r['budget']:g} s", []).append(r)
        for arm, runs in groups.items():
            failures += [f"- {model} {arm} seed {r['seed']}: failed: {failure_of(r)}" for r in runs if failure_of(r)]
            done = [r for r in runs if not failure_of(r)]  # the medians are over the runs that finished
            t99 = sorted(r["time_to_99"] for r in done if r["time_to_99"] is not None)
            reached = f"{t99[len(t99) // 2]:.1f} s" if t99 and len(t99) == len(done) else f"not reached ({len(t99)}/{len(done)})"
            accs = sorted(r["final_test_acc"] for r in done)
            walls = sorted(r["wall_seconds"] for r in done)
            rows.append([model, arm, count_with_failures(len(runs), len(runs) - len(done)), reached if done else "-",
                         f"{100 * accs[len(accs) // 2]:.2f}%" if done else "-", f"{walls[len(walls) // 2]:.1f} s" if done else "-"])
    tp = []
    for m, per in results["models"].items():
        for k, v in per["throughput"].items():
            tp.append([m, k, "failed" if failure_of(v) else f"{v:,.0f}"])
            if failure_of(v):
                failures.append(f"- {m} throughput, {k}: failed: {failure_of(v)}")
    lr = f" ({timing_lr_note(results['throughput_lr'])})" if "throughput_lr" in results else ""  # older files: lr 0.01
    failed = "\n".join(["", "Runs and measurements that failed (not in the medians above):", "", *failures, ""]) if failures else ""
    return f"""# Training speed on a GPU

Machine: {results['machine']}.  
Command: `{results['command']}`.

Each run is a fresh process (`python -m cnnlab train --device cuda ...`): *time to 99.0%* is from process
start (Python and CUDA start-up, data load included) to the end of the first epoch with test accuracy
>= 99.0%, evaluation included; medians over the runs (seeds 0, 1, 2).

{format_table(["model", "arm", "runs", "time to 99.0%", "test acc at end", "wall"], rows, markdown=True)}

Training throughput, images/s: cnnlab's training step (batches from the data resident on the GPU,
augmentation, forward, backward, SGD, schedule), 100 steps after 100 of warm-up, channels_last, bfloat16
autocast off and on{lr}:

{format_table(["model", "setting", "images/s"], tp, markdown=True)}
{failed}"""


if __name__ == "__main__":
    sys.exit(main())
