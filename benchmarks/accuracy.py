"""Accuracy benchmark: each model under each recipe over several seeds, on the official test sets.

    python benchmarks/accuracy.py                       # the lecture's 3 models x 2 recipes x 3 seeds, MNIST
    python benchmarks/accuracy.py --recipes default --seeds 0 1 2
    python benchmarks/accuracy.py --datasets mnist fashion-mnist --models resnet_bn inception_bn --recipes default --resume
    python benchmarks/accuracy.py --models inception_net --recipes default --epochs 20 --resume   # a row of its own

Writes benchmarks/results/accuracy.json (every run, appended as it finishes, so an interrupted
benchmark keeps what it measured and --resume skips it) and accuracy.md (the table the README quotes).
A run that fails (its loss stops being finite, or any other error) is recorded with its reason and the
benchmark goes on; the table's means are over the runs that finished, and --resume skips failed runs too
unless --retry-failed is given. Each run records the CPU it ran on (runs added by --resume may come from
another machine).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import attempt, count_with_failures, cpu_kind, describe_machine, failure_of, write_file, write_json  # noqa: E402

from cnnlab.data import load_data  # noqa: E402
from cnnlab.device import training_precision  # noqa: E402
from cnnlab.tables import format_table  # noqa: E402
from cnnlab.train import fit, make_config  # noqa: E402
from cnnlab.runs import evaluate, load  # noqa: E402

# Targets: mean test accuracy over 3 seeds with the default recipe (set for the lecture's networks on MNIST and for
# the batch-norm networks on both data sets), by (dataset, model).
TARGETS = {
    ("mnist", "resnet"): 99.50, ("mnist", "inception_net"): 99.45, ("mnist", "basic_cnn"): 99.20,
    ("mnist", "resnet_bn"): 99.70, ("mnist", "inception_bn"): 99.70,
    ("fashion-mnist", "resnet_bn"): 94.0, ("fashion-mnist", "inception_bn"): 94.0,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["basic_cnn", "resnet", "inception_net"], help="(default: all three)")
    p.add_argument("--recipes", nargs="+", default=["default", "course"], help="(default: default course)")
    p.add_argument("--datasets", nargs="+", default=["mnist"], help="(default: mnist)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="(default: 0 1 2)")
    p.add_argument("--epochs", type=int, help="train the default recipe this many epochs instead of each model's own; "
                   "such runs have rows of their own (default: each model's)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"), help="(default: benchmarks/results)")
    p.add_argument("--resume", action="store_true", help="keep runs already in accuracy.json, skip them (default: off)")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --resume, run again the runs recorded as failed, in place of their records (default: off)")
    p.add_argument("--report-only", action="store_true", help="rewrite accuracy.md from accuracy.json, train nothing")
    args = p.parse_args()
    if args.epochs is not None and (args.epochs < 1 or args.recipes != ["default"]):
        p.error("--epochs takes a whole number of at least 1, with --recipes default only (the course trains 10)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "accuracy.json"
    if args.report_only:
        saved = json.loads(json_path.read_text())
        write_file(out / "accuracy.md", render_markdown(saved["runs"], saved["machine"]))
        print(f"wrote {out / 'accuracy.md'} from {json_path}")
        return 0
    runs = json.loads(json_path.read_text())["runs"] if args.resume and json_path.exists() else []
    planned = [(d, m, r, s) for d, r, m, s in itertools.product(args.datasets, args.recipes, args.models, args.seeds)]
    todo, runs = plan_runs(planned, runs, args.retry_failed, args.epochs)
    machine = describe_machine()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)

    loaded = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, model, recipe, seed in todo:
            if dataset not in loaded:
                loaded[dataset] = load_data(dataset, progress=False)
            more = {} if args.epochs is None else {"epochs": args.epochs}
            run = run_one(dataset, model, recipe, seed, loaded[dataset], tmp, command, **more)
            runs.append(run)
            if failure_of(run):
                result = f"failed: {failure_of(run)}"
            else:
                also = f"  (mirror-averaged {run['test_acc_mirror_avg']:.2f}%)" if "test_acc_mirror_avg" in run else ""
                result = f"test {run['test_acc']:.2f}%{also}"
            print(f"{dataset} {model:14s} {recipe:8s} seed {seed}: {result}  {run['wall_seconds']:.0f}s", flush=True)
            _write_json(json_path, machine, command, runs)
    _write_json(json_path, machine, command, runs)
    write_file(out / "accuracy.md", render_markdown(runs, machine))
    print()
    print(format_table(HEADERS, summarise(runs)))
    print(f"\nwrote {out / 'accuracy.md'} and {json_path}")
    return 0


FLOAT32 = "float32"  # what the training steps of every run from before the precision was recorded computed in


def _key(run: dict) -> tuple:
    """(dataset, model, recipe, seed, grad clip, epochs, precision): what names a run (runs from before Fashion-MNIST
    have no dataset field, runs from before gradient clipping no grad_clip: they trained without it)."""
    return (run.get("dataset", "mnist"), run["model"], run["recipe"], run["seed"], run.get("grad_clip", 0.0),
            run["epochs"], run.get("precision", FLOAT32))


def _precision(cfg) -> str:
    """What a run of `cfg` on this machine's CPU trains in: "bfloat16" where --amp auto autocasts its steps (a CPU
    with bfloat16 instructions) or --amp bf16 asks for it, else "float32"."""
    return training_precision(torch.device("cpu"), cfg.amp)


def _now(dataset: str, model: str, recipe: str) -> tuple[float, int, str]:
    """The gradient clipping, the epochs and the precision a run of this recipe trains with now, here (the default
    recipe clips, and it once did not; a model's default epochs can change; the precision follows the CPU)."""
    cfg = make_config(model, recipe, dataset)
    return cfg.grad_clip, cfg.epochs, _precision(cfg)


def _planned_key(planned: tuple, epochs: int | None) -> tuple:
    """A planned (dataset, model, recipe, seed) as _key names its run: with the clipping of the recipe now, `epochs`
    or the model's own, and the precision it trains in on this machine."""
    clip, own, precision = _now(*planned[:3])
    return (*planned, clip, own if epochs is None else epochs, precision)


BEFORE_CLIPPING = "default, before clipping"  # the row of default-recipe runs from before it clipped the gradient
BFLOAT16 = ", bfloat16 steps"  # ends the label of a row of runs whose training steps ran in bfloat16


def _recipe_label(run: dict) -> str:
    """The recipe as the table names it: a default-recipe run from before clipping, or of other epochs than the
    model's default now, has a row of its own."""
    bf16 = BFLOAT16 if run.get("precision", FLOAT32) == "bfloat16" else ""
    if run["recipe"] != "default":
        return run["recipe"] + bf16
    if not run.get("grad_clip"):
        return BEFORE_CLIPPING + bf16
    epochs = _now(run.get("dataset", "mnist"), run["model"], "default")[1]
    return ("default" if run["epochs"] == epochs else f"default, {run['epochs']} epochs") + bf16


def _judged(label: str) -> bool:
    """Whether a row is the default recipe's, as it is or was before clipping, in either precision (a CPU with
    bfloat16 instructions trains it in bfloat16): the rows the targets judge; a run of other epochs is a variant."""
    return label.removesuffix(BFLOAT16) in ("default", BEFORE_CLIPPING)


def _label_order(label: str) -> tuple[int, str]:
    """The recipe now first (float32, then bfloat16), then the default recipe at other epochs, then before clipping,
    then the course."""
    base = label.removesuffix(BFLOAT16)
    if base == "default":
        return 0, label
    if base == BEFORE_CLIPPING:
        return 2, label
    return (1 if base.startswith("default") else 3), label


def plan_runs(planned: list[tuple], runs: list[dict], retry_failed: bool = False,
              epochs: int | None = None) -> tuple[list[tuple], list[dict]]:
    """The (dataset, model, recipe, seed) of `planned` still to run (for `epochs`, or each model's own), and the
    recorded `runs` to keep: a recorded run is kept and not run again, a failed one too unless `retry_failed` (then
    its record gives way to the new run)."""
    keyed = {_planned_key(k, epochs): k for k in planned}
    if retry_failed:
        runs = [r for r in runs if not (failure_of(r) and _key(r) in keyed)]
    done = {_key(r) for r in runs}
    return [k for key, k in keyed.items() if key not in done], runs


def run_one(dataset: str, model: str, recipe: str, seed: int, data, tmp: str | Path, command: str = "", **overrides) -> dict:
    """Train one model under one recipe and seed on `data` (run directory under tmp) and return its record for
    accuracy.json: the test accuracies, or "failed" with the reason when the run raised (its loss stopped being
    finite, or anything else); in both cases its wall time and the CPU it ran on. `overrides` go to make_config
    (the tests use them for tiny runs)."""
    cfg = make_config(model, recipe, dataset, seed=seed, device="cpu", **overrides)
    run = dict(dataset=dataset, model=model, recipe=recipe, seed=seed, epochs=cfg.epochs, grad_clip=cfg.grad_clip,
               precision=_precision(cfg))
    if overrides:
        run["overrides"] = overrides
    t0 = time.perf_counter()
    measured, failed = attempt(_train_and_test, cfg, data, tmp)
    # the wall time of the training alone: the mirror-averaged accuracy is measured after it
    run.update(measured or {"failed": failed, "wall_seconds": time.perf_counter() - t0})
    run.update(cpu=cpu_kind(), command=command)
    return run


def _train_and_test(cfg, data, tmp: str | Path) -> dict:
    t0 = time.perf_counter()
    r = fit(cfg, data, out_root=tmp, progress=False)
    measured = dict(
        test_acc=100 * r.test_acc, best_epoch=r.best_epoch,
        best_val_acc=None if r.best_val_acc != r.best_val_acc else 100 * r.best_val_acc,
        final_test_acc=100 * r.final_test_acc, wall_seconds=time.perf_counter() - t0, precision=r.precision,
    )
    if cfg.hflip and not cfg.tta_hflip:  # a failure here keeps the run's own figures
        mirrored, failed = attempt(mirror_averaged_test_acc, r.run_dir / "best.pt", data)
        measured.update({"test_acc_mirror_avg": 100 * mirrored} if failed is None else {"mirror_avg_failed": failed})
    return measured


def mirror_averaged_test_acc(checkpoint: Path, data) -> float:
    """Test accuracy of a model trained with mirroring when each test image's logits are averaged with its
    mirror image's (tta_hflip). Measured after the run, outside its wall time, on the model it chose."""
    trained = load(checkpoint, device="cpu")
    return evaluate(trained.network, data.test_images, data.test_labels, replace(trained.config, tta_hflip=True))[1]


HEADERS = ["dataset", "model", "recipe", "seeds", "epochs", "test acc (mean ± std)", "min..max", "mirror-avg", "target", "met", "wall s/run"]


def _cpu_labels(runs: list[dict]) -> dict:
    """"CPU 1", "CPU 2", ... for each CPU the runs recorded, in the order first met; runs from before the CPU was
    recorded share the key None."""
    labels, n = {}, 0
    for cpu in dict.fromkeys(r.get("cpu") for r in runs):
        n += cpu is not None
        labels[cpu] = "CPU not recorded" if cpu is None else f"CPU {n}"
    return labels


def _wall(finished: list[dict], labels: dict) -> str:
    """The median wall time per run; per CPU, each named, when the row's runs ran on different CPUs."""
    if not finished:
        return "-"
    by_cpu: dict = {}
    for r in finished:
        by_cpu.setdefault(r.get("cpu"), []).append(r["wall_seconds"])
    if len(by_cpu) == 1:
        return f"{statistics.median(next(iter(by_cpu.values()))):.0f}"
    return "; ".join(f"{statistics.median(ws):.0f} ({labels[cpu]})" for cpu, ws in by_cpu.items())


def summarise(runs: list[dict]) -> list[list[str]]:
    """The table's rows, one per (dataset, recipe, model): means, spread and wall time over the runs that finished;
    the seeds column counts the failed ones too ("3 (1 failed)")."""
    rows = []
    labels = _cpu_labels(runs)
    ds = lambda r: r.get("dataset", "mnist")  # noqa: E731  (runs from before Fashion-MNIST have no field)
    keys = sorted({(ds(r), _recipe_label(r), r["model"]) for r in runs},
                  key=lambda k: (k[0] != "mnist", k[0], _label_order(k[1]), k[2]))
    for dataset, recipe, model in keys:
        rs = [r for r in runs if r["model"] == model and _recipe_label(r) == recipe and ds(r) == dataset]
        finished = [r for r in rs if not failure_of(r)]
        accs = [r["test_acc"] for r in finished]
        target = TARGETS.get((dataset, model)) if _judged(recipe) else None
        if accs:
            mean = statistics.mean(accs)
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            acc, spread = f"{mean:.2f} ± {std:.2f}", f"{min(accs):.2f}..{max(accs):.2f}"
            met = "-" if target is None else ("yes" if mean >= target else f"no ({mean - target:+.2f})")
        else:
            acc, spread = "- (all failed)", "-"
            met = "-" if target is None else "no (no run finished)"
        mirrored = [r["test_acc_mirror_avg"] for r in finished if "test_acc_mirror_avg" in r]
        mirror = f"{statistics.mean(mirrored):.2f}" if mirrored and len(mirrored) == len(finished) else "-"
        rows.append(
            [
                dataset, model, recipe, count_with_failures(len(rs), len(rs) - len(finished)), str(rs[0]["epochs"]), acc,
                spread, mirror, "-" if target is None else f"{target:.2f}", met, _wall(finished, labels),
            ]
        )
    return rows


def _notes(runs: list[dict]) -> list[str]:
    """Notes attached to single runs in accuracy.json (a "note" field, written by hand after the fact)."""
    return [f"- {r.get('dataset', 'mnist')} {r['model']} {r['recipe']} seed {r['seed']}: {r['note']}" for r in runs if r.get("note")]


def _failures(runs: list[dict]) -> list[str]:
    """One line per failed run: which, and why."""
    return [f"- {r.get('dataset', 'mnist')} {r['model']} {r['recipe']} seed {r['seed']}: failed: {failure_of(r)}"
            for r in runs if failure_of(r)]


def _cpus(runs: list[dict]) -> list[str]:
    """The CPUs the runs ran on, when more than one (with the runs recorded before the CPU was)."""
    labels = _cpu_labels(runs)
    if len(labels) < 2:
        return []
    count = lambda cpu: sum(r.get("cpu") == cpu for r in runs)  # noqa: E731
    return [f"- {label}: {'(runs from before the CPU was recorded)' if cpu is None else cpu}, {count(cpu)} runs"
            for cpu, label in labels.items()]


def render_markdown(runs: list[dict], machine: str) -> str:
    notes, failures, cpus = _notes(runs), _failures(runs), _cpus(runs)
    other_epochs = any(_recipe_label(r).removesuffix(BFLOAT16).endswith(" epochs") for r in runs)
    bf16 = any(_recipe_label(r).endswith(BFLOAT16) for r in runs)
    return "\n".join(
        [
            "# Accuracy on the official MNIST and Fashion-MNIST test sets",
            "",
            f"Machine{' of the last command (each run names its CPU: below the table)' if cpus else ''}: {machine}.  ",
            f"Commands: `{_commands(runs)}` (run from the repository root, in that order, --resume adding runs).",
            "",
            "Test accuracy in % of the 10,000 official test images; mean and sample standard deviation over seeds.",
            "Fashion-MNIST's default recipe mirrors images left-right instead of rotating or scaling them.",
            "mirror-avg: the mean test accuracy of the same chosen models when each test image's logits are averaged",
            "with its mirror image's (tta_hflip), measured after each run outside its wall time; '-' where not measured.",
            "The default recipe selects its epoch on the last 5,000 training images (held out); the course recipe",
            "trains on all 60,000 and reports its last epoch, as the course does. Targets (mean of 3 seeds, default",
            "recipe) are set for the lecture's networks and for resnet_bn and inception_bn (each run within 20",
            "minutes), and not judged on rows of other epochs. Wall time is the median per run, evaluation of every epoch",
            "included, runs one after another on an otherwise lightly used machine (light editing and short test",
            "runs happened beside it, so single runs can be slower by 10-30%).",
            "The default recipe now clips the gradient's norm at 2. Rows of runs from before it did",
            "read 'default, before clipping'; they stay as they were measured, beside the rows of the recipe now.",
            *(["Rows 'default, N epochs' are default-recipe runs of N epochs where the model's default now is other",
               "(the epochs column of its 'default' row)."] if other_epochs else []),
            *(["Rows ending 'bfloat16 steps' are runs whose training steps ran under bfloat16 autocast: what `--amp",
               "auto` does on a CPU with bfloat16 instructions (AMX, AVX512_BF16), where it measured 1.2-1.8x faster;",
               "they evaluate in float32, and the targets judge them as they judge the float32 rows of the same",
               "recipe."] if bf16 else []),
            "",
            "The course recipe here keeps the course's hyper-parameters (batch 64, SGD lr 0.01 momentum 0.5, plain",
            "cross-entropy, 10 epochs) but feeds batches from cnnlab's in-memory loader, so its wall time is below",
            "the course's own DataLoader loop (386 s for resnet's 10 epochs on this kind of machine, measured when the",
            "project began; benchmarks/speed.py measures that loop itself).",
            *(["A run that failed counts in the seeds column (\"3 (1 failed)\") and nowhere else: accuracies and wall",
               "times are over the runs that finished; the failures and their reasons are listed below the table."] if failures else []),
            *(["The runs came from more than one CPU (listed below the table); where a row's did, its wall time is",
               "given per CPU."] if cpus else []),
            "",
            format_table(HEADERS, summarise(runs), markdown=True),
            "",
            *(["Runs that failed:", "", *failures, ""] if failures else []),
            *(["CPUs of the runs:", "", *cpus, ""] if cpus else []),
            *(["Notes on single runs:", "", *notes, ""] if notes else []),
        ]
    )


def _commands(runs: list[dict]) -> str:
    """The commands that produced the runs (runs from before commands were recorded: the first one)."""
    return "`, `".join(dict.fromkeys(r.get("command", "python benchmarks/accuracy.py") for r in runs))


def _write_json(path: Path, machine: str, command: str, runs: list[dict]) -> None:
    write_json(path, {"machine": machine, "command": command, "runs": runs})


if __name__ == "__main__":
    raise SystemExit(main())
