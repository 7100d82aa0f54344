"""Inside-view benchmark: how long `explain` and `Explanation.as_dict` (PNG encoding included) take for one drawn digit.

    python benchmarks/inside.py                       # every registered model, 200 calls each, one thread
    python benchmarks/inside.py --models inception_net resnet --calls 500 --checkpoint runs/<time>-resnet

For each model: a real MNIST test digit drawn dark on a light 280x280 canvas, as PNG bytes (what the web page sends),
through `explain` with nothing switched off and with the model's first part switched off, then `as_dict`; p50 and p90
over --calls calls of each, in one thread (torch.set_num_threads(1), as the server runs a request). The networks have
seeded random weights unless a --checkpoint of that model is given: the time does not depend on the weights.

Writes inside.json and inside.md to --out (default benchmarks/results). Run it alone: other work on the cores shows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe_machine, write_results  # noqa: E402
from serve import canvas_pngs  # noqa: E402  (the page's drawing of a test digit)

import torch  # noqa: E402

from cnnlab.inference.explain import explain  # noqa: E402
from cnnlab.config import make_config  # noqa: E402
from cnnlab.data import load_mnist  # noqa: E402
from cnnlab.models import create_model, list_models, parts  # noqa: E402
from cnnlab.runs.checkpoint import Checkpoint  # noqa: E402
from cnnlab.runs.trained import TrainedModel, load  # noqa: E402
from cnnlab.sysinfo import cpu_kind  # noqa: E402
from cnnlab.tables import format_table  # noqa: E402


def quantiles(seconds: list[float]) -> dict:
    xs = sorted(seconds)
    return {"n": len(xs), "p50_ms": 1000 * statistics.median(xs), "p90_ms": 1000 * xs[int(round(0.9 * (len(xs) - 1)))]}


def trained_model(name: str, checkpoints: list[str]) -> TrainedModel:
    for path in checkpoints:
        trained = load(path, "cpu")
        if trained.config.model == name:
            return trained
    torch.manual_seed(0)
    cfg = make_config(name)
    return TrainedModel(create_model(name).eval(), cfg, Checkpoint(model_state={}, config=cfg.to_dict()), Path("untrained"))


def measure(trained: TrainedModel, pictures: list[bytes], silence: list[str], calls: int, max_maps: int) -> dict:
    for picture in pictures[:10]:  # warm up: first calls allocate
        explain(trained, picture, silence, max_maps).as_dict()
    run, encode, whole, size = [], [], [], 0
    for k in range(calls):
        t0 = time.perf_counter()
        e = explain(trained, pictures[k % len(pictures)], silence, max_maps)
        t1 = time.perf_counter()
        d = e.as_dict()
        t2 = time.perf_counter()
        run.append(t1 - t0)
        encode.append(t2 - t1)
        whole.append(t2 - t0)
        size = len(json.dumps(d))
    return {"silenced": silence, "explain": quantiles(run), "as_dict": quantiles(encode), "total": quantiles(whole),
            "json_kB": size / 1000}


def render(results: dict) -> str:
    rows = []
    for r in results["rows"]:
        rows.append([r["model"], ", ".join(r["silenced"]) or "-", f"{r['explain']['p50_ms']:.1f}", f"{r['explain']['p90_ms']:.1f}",
                     f"{r['as_dict']['p50_ms']:.1f}", f"{r['as_dict']['p90_ms']:.1f}", f"{r['total']['p50_ms']:.1f}",
                     f"{r['total']['p90_ms']:.1f}", f"{r['json_kB']:.0f}"])
    table = format_table(["model", "switched off", "explain p50", "p90", "as_dict p50", "p90", "total p50", "p90", "JSON kB"],
                         rows, markdown=True)
    return f"""# The inside view: time of one explanation

`python benchmarks/inside.py{results['args']}`: {results['calls']} calls per row, one thread, max_maps={results['max_maps']};
a real MNIST test digit drawn on a 280x280 canvas as PNG bytes, as the page sends it. Milliseconds.
`explain`: preparing the picture, the model run(s) through the hooks (two runs with a part switched off: the
probabilities with nothing off come from a plain predict) and the maps as arrays; `as_dict`: PNG encoding and the JSON
dict.

Machine: {results['machine']}
CPU: {results['cpu']}
Load average (1 min) before and after: {results['load_average'][0]:.1f}, {results['load_average'][1]:.1f} (other work on the cores slows every row).

{table}
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list_models(), choices=list_models(), help="default: every registered model")
    p.add_argument("--calls", type=int, default=200, help="timed calls per model and setting (default: 200)")
    p.add_argument("--max-maps", type=int, default=32, help="channels drawn per feature map (default: 32, the page's)")
    p.add_argument("--checkpoint", nargs="*", default=[], help="trained runs to use for their models (default: none)")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()
    torch.set_num_threads(1)  # as the server runs one request
    load_before = os.getloadavg()[0]
    pictures = [data for data, _ in canvas_pngs(load_mnist(progress=False), 50)]
    rows = []
    for name in args.models:
        trained = trained_model(name, args.checkpoint)
        first = [p.name for p in parts(trained.network)][:1]
        for silence in ([], first) if first else ([],):
            rows.append({"model": name, **measure(trained, pictures, silence, args.calls, args.max_maps)})
            print(f"{name} {silence}: total p50 {rows[-1]['total']['p50_ms']:.1f} ms", file=sys.stderr)
    shown = "" if sys.argv[1:] == [] else " " + " ".join(sys.argv[1:])
    results = {"machine": describe_machine(), "cpu": cpu_kind(), "calls": args.calls, "max_maps": args.max_maps,
               "args": shown, "rows": rows, "load_average": [load_before, os.getloadavg()[0]]}
    write_results(args.out, "inside", results, render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
