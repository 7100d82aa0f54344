"""GPU speed: cnnlab's training on a CUDA device, the same arms as speed.py less the course loop.

    python benchmarks/gpu.py --data-dir DIR          # on a machine with a CUDA GPU

Measures, each run in a fresh process: the default recipe (`cnnlab train --model M --device cuda`) and
short `--time-budget` runs, with the wall time from process start to 99.0% test accuracy; then, in this
process, training throughput (images/s) of cnnlab's training step with bfloat16 autocast on and off and at
two batch sizes. Writes gpu.json and gpu.md to --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe_machine, write_results  # noqa: E402
from speed import cnnlab_throughput, run_cnnlab  # noqa: E402

from cnnlab.data import load_mnist  # noqa: E402
from cnnlab.tables import format_table  # noqa: E402
from cnnlab.train.runtime import configure  # noqa: E402

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
    results = {"machine": describe_machine(), "command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "models": {}}
    data = load_mnist(args.data_dir, progress=False)
    extra = ("--device", "cuda", "--data-dir", args.data_dir)
    for model in args.models:
        per = results["models"][model] = {}
        per["throughput"] = {
            # lr 0.01: speed does not depend on it, and the recipe's 0.05 diverges at batch 512 (no batch norm)
            f"batch {b}, {amp}": cnnlab_throughput(model, data, steps=100, repeats=1, device="cuda", batch_size=b, amp=amp, lr=0.01)
            for b in (128, 512) for amp in ("off", "bf16")
        }
        print(model, per["throughput"], flush=True)
        per["default"] = [run_cnnlab("default", model, 0, None, extra)]
        per["budget"] = [run_cnnlab("budget", model, s, b, extra) for b in BUDGETS[model] for s in range(args.budget_runs)]
        for r in per["default"] + per["budget"]:
            print(model, r["arm"], r.get("budget"), r["time_to_99"], r["final_test_acc"], round(r["wall_seconds"], 1), flush=True)
    write_results(args.out, "gpu", results, render(results))
    return 0


def render(results: dict) -> str:
    rows = []
    for model, per in results["models"].items():
        groups: dict[str, list[dict]] = {}
        for r in per["default"] + per["budget"]:
            groups.setdefault("default" if r["arm"] == "default" else f"budget {r['budget']:g} s", []).append(r)
        for arm, runs in groups.items():
            t99 = sorted(r["time_to_99"] for r in runs if r["time_to_99"] is not None)
            reached = f"{t99[len(t99) // 2]:.1f} s" if len(t99) == len(runs) else f"not reached ({len(t99)}/{len(runs)})"
            accs = sorted(r["final_test_acc"] for r in runs)
            walls = sorted(r["wall_seconds"] for r in runs)
            rows.append([model, arm, str(len(runs)), reached, f"{100 * accs[len(accs) // 2]:.2f}%", f"{walls[len(walls) // 2]:.1f} s"])
    tp = [[m, k, f"{v:,.0f}"] for m, per in results["models"].items() for k, v in per["throughput"].items()]
    return f"""# Training speed on a GPU

Machine: {results['machine']}.  
Command: `{results['command']}`.

Each run is a fresh process (`python -m cnnlab train --device cuda ...`): *time to 99.0%* is from process
start (Python and CUDA start-up, data load included) to the end of the first epoch with test accuracy
>= 99.0%, evaluation included; medians over the runs (seeds 0, 1, 2).

{format_table(["model", "arm", "runs", "time to 99.0%", "test acc at end", "wall"], rows, markdown=True)}

Training throughput, images/s: cnnlab's training step (batches from the data resident on the GPU,
augmentation, forward, backward, SGD, schedule), 100 steps after 100 of warm-up, channels_last, bfloat16
autocast off and on:

{format_table(["model", "setting", "images/s"], tp, markdown=True)}
"""


if __name__ == "__main__":
    sys.exit(main())
