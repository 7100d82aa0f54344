"""Weight-averaging benchmark: the trained weights against their exponential moving average, in the same runs.

    python benchmarks/averaging.py                                  # resnet_bn and inception_net, seeds 0 1 2
    python benchmarks/averaging.py --models inception_net --seeds 3 --resume

Each run is a model's default recipe on MNIST (the rate's one cycle falling to zero at its last step), trained
through the run's own parts and loop (train/parts.build_parts, train/loop.train_one_epoch) with the average that
`--ema DECAY` keeps (train/average.WeightAverage) updated after every step. After every epoch both the trained
weights and the average are evaluated on the validation hold-out and the test set. Each is then judged as a run
judges itself: the epoch with its best validation accuracy (ties to the later one), and the test accuracy there.
One run yields both arms, so they differ only by the averaging, never by the seed's trajectory.

Writes benchmarks/results/averaging.json (every epoch of every run, saved as each run ends; --resume skips the runs
already there) and averaging.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_kind, describe_machine, write_file, write_json  # noqa: E402

from cnnlab.config import make_spec  # noqa: E402
from cnnlab.device import configure  # noqa: E402
from cnnlab.runs.forward import evaluate  # noqa: E402
from cnnlab.tables import format_table  # noqa: E402
from cnnlab.train.average import WeightAverage  # noqa: E402
from cnnlab.train.distributed import SINGLE  # noqa: E402
from cnnlab.train.loop import EpochPosition, StepHooks, train_one_epoch  # noqa: E402
from cnnlab.train.parts import build_parts  # noqa: E402

HERE = Path(__file__).resolve().parent
ARMS = ("trained", "average")


def one_run(model: str, seed: int, decay: float, data, dataset: str) -> dict:
    """Both arms of one default-recipe run, epoch by epoch."""
    spec = make_spec(model, "default", dataset, seed=seed)
    device = torch.device("cpu")
    p = build_parts(spec, data, SINGLE, device, time.perf_counter())
    p.average = WeightAverage(p.model, decay)  # what --ema DECAY builds; the loop updates it after every step
    epochs, t0 = [], time.perf_counter()
    for epoch in range(1, p.plan.epochs + 1):
        position = EpochPosition(p.generator.get_state(), p.optimizer.param_groups[0]["lr"])
        train_one_epoch(p, epoch, StepHooks([]), position)
        s = p.splits
        row = {"epoch": epoch, "seconds": round(time.perf_counter() - t0, 1)}
        for arm, net in zip(ARMS, (p.model, p.average.model)):
            row[arm] = {"val": evaluate(net, s.val_x, s.val_y, p.cfg)[1], "test": evaluate(net, s.test_x, s.test_y, p.cfg)[1]}
        epochs.append(row)
        print(f"{model} seed {seed} epoch {epoch}: " + ", ".join(
            f"{arm} val {100 * row[arm]['val']:.2f}% test {100 * row[arm]['test']:.2f}%" for arm in ARMS), flush=True)
    return {"model": model, "dataset": dataset, "seed": seed, "decay": decay, "cpu": cpu_kind(), "epochs": epochs}


def chosen(run: dict, arm: str) -> dict:
    """The epoch a run would report for this arm: best validation accuracy, ties to the later epoch."""
    best = max(run["epochs"], key=lambda r: (r[arm]["val"], r["epoch"]))
    return {"epoch": best["epoch"], "val": best[arm]["val"], "test": best[arm]["test"]}


def render_markdown(results: dict) -> str:
    runs = results["runs"]
    rows = []
    for r in runs:
        t, a = chosen(r, "trained"), chosen(r, "average")
        mid = r["epochs"][min(2, len(r["epochs"]) - 1)]
        rows.append([r["model"], r["seed"], f"{t['epoch']}: {100 * t['val']:.2f} / {100 * t['test']:.2f}",
                     f"{a['epoch']}: {100 * a['val']:.2f} / {100 * a['test']:.2f}",
                     f"{100 * (a['test'] - t['test']):+.2f}",
                     f"{100 * mid['trained']['test']:.2f} / {100 * mid['average']['test']:.2f}"])
    means = []
    for model in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == model]
        t = statistics.mean(chosen(r, "trained")["test"] for r in mine)
        a = statistics.mean(chosen(r, "average")["test"] for r in mine)
        means.append([model, len(mine), f"{100 * t:.2f}", f"{100 * a:.2f}", f"{100 * (a - t):+.2f}"])
    decay = ", ".join(sorted({f"{r['decay']:g}" for r in runs}))
    return f"""# An average of the weights against the trained weights

Machine: {results['machine']}.  
Command: `{results['command']}` (run from the repository root).

Each row is one run of the model's default recipe on MNIST (its one-cycle rate falling to zero at the last step),
with the average that `--ema {decay}` keeps updated after every step. After every epoch both the trained weights
and the average were evaluated on the 5,000 held-out validation images and the 10,000 test images; each arm is
judged as a run judges itself, at the epoch of its best validation accuracy (ties to the later). *Epoch 3*: the
test accuracy of both after the third epoch, mid-run, where the rate is still high.

| model | seed | trained: epoch: val / test % | average: epoch: val / test % | average - trained | epoch 3: trained / average % |
|---|---:|---|---|---:|---|
""" + "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in rows) + f"""

Means over seeds:

{format_table(["model", "seeds", "trained test %", "average test %", "average - trained"], means, markdown=True)}
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet_bn", "inception_net"], help="(default: resnet_bn inception_net)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="(default: 0 1 2)")
    p.add_argument("--decay", type=float, default=0.999, help="the average's decay, as --ema takes it (default: 0.999)")
    p.add_argument("--out", default=str(HERE / "results"), help="(default: benchmarks/results)")
    p.add_argument("--resume", action="store_true", help="keep the runs averaging.json already holds (default: off)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "averaging.json"
    results = json.loads(json_path.read_text()) if args.resume and json_path.exists() else {"runs": []}
    results["machine"] = describe_machine()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    earlier = results.get("command")  # the runs kept by --resume came from these
    results["command"] = command if not earlier or earlier.endswith(command) else f"{earlier}`, then `{command}"
    configure(torch.device("cpu"))
    from cnnlab.data import load_data

    data = load_data("mnist", progress=False)
    for model in args.models:
        for seed in args.seeds:
            if any(r["model"] == model and r["seed"] == seed and r["decay"] == args.decay for r in results["runs"]):
                continue
            results["runs"].append(one_run(model, seed, args.decay, data, "mnist"))
            write_json(json_path, results)
    text = render_markdown(results)
    write_file(out / "averaging.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
