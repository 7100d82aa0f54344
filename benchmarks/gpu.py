"""GPU speed: cnnlab's training on a CUDA device, the same arms as speed.py less the course loop.

    python benchmarks/gpu.py --data-dir DIR          # on a machine with a CUDA GPU

Measures, each run in a fresh process: the default recipe (`cnnlab train --model M --device cuda`) and
short `--time-budget` runs, with the wall time from process start to 99.0% test accuracy; then, in this
process, training throughput (images/s) of the default step with bfloat16 autocast on and off and at two
batch sizes. Writes gpu.json and gpu.md to --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe_machine, write_results  # noqa: E402
from speed import run_cnnlab  # noqa: E402

from cnnlab.models import create_model  # noqa: E402
from cnnlab.tables import format_table  # noqa: E402
from cnnlab.train.runtime import autocast, configure  # noqa: E402

BUDGETS = {"resnet": (3.0, 6.0), "inception_net": (4.0, 8.0)}


def throughput(model_name: str, batch: int, amp: bool, steps: int = 100) -> float:
    """Images/s of forward + backward + SGD step on a fixed batch resident on the GPU."""
    dev = torch.device("cuda")
    model = create_model(model_name).to(dev, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 1, 28, 28, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=dev)
    dtype = torch.bfloat16 if amp else None

    def step():
        with autocast(dev, dtype):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(20):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


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
    extra = ("--device", "cuda", "--data-dir", args.data_dir)
    for model in args.models:
        per = results["models"][model] = {}
        per["throughput"] = {
            f"batch {b}, {'bf16' if amp else 'fp32'}": throughput(model, b, amp) for b in (128, 512) for amp in (False, True)
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

Training throughput, images/s (forward, backward and SGD step on a batch resident on the GPU, 100 steps
after 20 of warm-up, channels_last):

{format_table(["model", "setting", "images/s"], tp, markdown=True)}
"""


if __name__ == "__main__":
    sys.exit(main())
