"""bfloat16 against float32: cnnlab's training step in each, timed in turns on this CPU, beside what `--amp auto`
trains in here.

    python benchmarks/precision.py                             # resnet, inception_net, resnet_bn
    python benchmarks/precision.py --models resnet --rounds 3

For each model it builds cnnlab's training step on real MNIST batches as a run builds it (augmentation,
channels_last forward and backward, optimiser, schedule: benchmarks/speed.py's), once with `--amp off` (float32)
and once with `--amp bf16` (the forward pass under bfloat16 autocast, which is what `--amp auto` does where the CPU
has bfloat16 instructions), warms both up, then times ROUNDS rounds of STEPS steps with the two precisions in
turn, so that other work on a shared machine falls on both alike. It reports each one's median images/s, and the
ratio of the two within each round: its median and range.

Results are kept per CPU: precision.json holds every CPU measured (a run replaces its own CPU's entry and keeps the
others), and precision.md shows them all, each with the bfloat16 instructions torch finds there
(cnnlab.device.bfloat16_units) and what `--amp auto` trains in there. Run it alone: on 2 cores any other load
moves every figure.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_kind, describe_machine, timing_lr_note, write_results  # noqa: E402
from speed import THROUGHPUT_LR, _training_steps, precision_here  # noqa: E402

from cnnlab.config import make_spec  # noqa: E402
from cnnlab.data import load_mnist  # noqa: E402
from cnnlab.device import bfloat16_units  # noqa: E402
from cnnlab.models import list_models  # noqa: E402
from cnnlab.tables import format_table  # noqa: E402

MODELS = ["resnet", "inception_net", "resnet_bn"]
PRECISIONS = {"float32": "off", "bfloat16": "bf16"}  # the name a table shows -> the --amp that trains in it


def measure(model: str, data, steps: int, rounds: int) -> dict[str, list[float]]:
    """Images/s of `model`'s training step in each precision: `rounds` timings of `steps` steps each, in turns,
    after one untimed run of `steps` steps of each."""
    runs = {name: _training_steps(model, data, amp=amp) for name, amp in PRECISIONS.items()}
    for run in runs.values():
        run(steps)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t = time.perf_counter()
            images = run(steps)
            rates[name].append(images / (time.perf_counter() - t))
    return rates


def measure_here(models: list[str], data, steps: int, rounds: int, command: str, progress=print) -> dict:
    """This CPU's entry of precision.json: its machine line, what --amp auto trains in, and each model's rates."""
    entry = {"machine": describe_machine(), "command": command, "units": bfloat16_units(),
             "auto": precision_here(), "steps": steps, "rounds": rounds,
             "batch_size": make_spec("resnet").config.batch_size, "lr": THROUGHPUT_LR, "models": {}}
    for model in models:
        entry["models"][model] = rates = measure(model, data, steps, rounds)
        med = {name: statistics.median(r) for name, r in rates.items()}
        progress(f"{model}: float32 {med['float32']:.0f}, bfloat16 {med['bfloat16']:.0f} images/s, "
                 f"{med['bfloat16'] / med['float32']:.2f}x")
    return entry


def merge(results: dict, cpu: str, entry: dict) -> dict:
    """results with `cpu`'s entry replaced by `entry` (added if new); every other CPU's entry kept as it was."""
    return {**results, "cpus": {**results.get("cpus", {}), cpu: entry}}


HEADERS = ["cpu", "bfloat16 instructions", "auto trains in", "model", "float32 img/s", "bfloat16 img/s",
           "bfloat16 / float32", "range of rounds"]


def rows(results: dict) -> list[list]:
    """One row per CPU and model (HEADERS): the median images/s of each precision, and bfloat16's over float32's
    round by round (each round times the two one after the other): their median and range."""
    out = []
    for cpu, entry in results.get("cpus", {}).items():
        for model, rates in entry["models"].items():
            ratios = [b / f for f, b in zip(rates["float32"], rates["bfloat16"])]
            out.append([cpu, entry["units"] or "none", entry["auto"], model, round(statistics.median(rates["float32"])),
                        round(statistics.median(rates["bfloat16"])), f"{statistics.median(ratios):.2f}x",
                        f"{min(ratios):.2f}..{max(ratios):.2f}x"])
    return out


def render_markdown(results: dict) -> str:
    cpus = results.get("cpus", {})
    machines = "\n".join(f"- {entry['machine']}: `{entry['command']}`, {entry['rounds']} rounds of {entry['steps']} "
                         f"steps of {entry['batch_size']} images, {timing_lr_note(entry['lr'])}"
                         for entry in cpus.values())
    return f"""# bfloat16 against float32: the training step on each CPU

cnnlab's training step on real MNIST batches (augmentation, channels_last forward and backward, optimiser,
schedule), built as a run builds it, once in float32 (`--amp off`) and once with its forward pass under bfloat16
autocast (`--amp bf16`), the two timed in turns in one process: the median images/s of each, and the ratio of the
two within each round (the two timed one after the other), its median and range over the rounds.
*auto trains in*: what `--amp auto`, the default, trains in on that CPU: bfloat16 where torch finds bfloat16
instructions (AMX or AVX512_BF16), float32 elsewhere. Evaluation is float32 either way.

{format_table(HEADERS, rows(results), markdown=True)}

Machines and commands (one entry per CPU; a run on a CPU replaces that CPU's rows):

{machines}
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=MODELS, choices=list_models(), metavar="MODEL",
                   help=f"(default: {' '.join(MODELS)})")
    p.add_argument("--steps", type=int, default=40, help="training steps a timing (default: 40)")
    p.add_argument("--rounds", type=int, default=5, help="timings of each precision, in turns (default: 5)")
    p.add_argument("--out", default=str(HERE / "results"), help="(default: benchmarks/results)")
    p.add_argument("--report-only", action="store_true", help="rewrite precision.md from precision.json, run nothing")
    args = p.parse_args()
    if args.steps < 1 or args.rounds < 1:
        p.error("--steps and --rounds must be at least 1")

    json_path = Path(args.out) / "precision.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    if not args.report_only:
        data = load_mnist(progress=False)
        command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
        results = merge(results, cpu_kind(), measure_here(args.models, data, args.steps, args.rounds, command))
    write_results(args.out, "precision", results, render_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
