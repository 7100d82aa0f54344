"""The `cnnlab` command: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Sequence

EXAMPLES = """examples:
  cnnlab models
  cnnlab train --model lecture                  # the three lecture networks, then a comparison table
  cnnlab train --model resnet_bn --dataset fashion-mnist
  cnnlab train --model resnet --recipe course   # the course's own loop, for comparison
  cnnlab evaluate runs/<time>-resnet            # per-class accuracy and confusion.png
  cnnlab compare runs/*-resnet runs/*-inception_net
  cnnlab predict runs/<time>-resnet my_digit.png  # top 3 classes with probabilities
  cnnlab serve                                  # draw, look inside, train: http://127.0.0.1:8000
  cnnlab export runs/<time>-resnet --format onnx
  cnnlab analyze cost                           # the 1x1 claim and where each network's work is
  cnnlab analyze depth                          # plain against residual stacks, depth 2 to 32
  cnnlab report                                 # everything above in one Markdown report
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    from cnnlab import __version__
    from cnnlab.data.sets.registry import usage as dataset_usage
    from cnnlab.models import list_models
    from cnnlab.config import RECIPES, Range, setting_range

    p = _Parser(
        prog="cnnlab",
        description="The Inception and residual networks of the lecture 'CNN, advanced', trained on real MNIST, "
        "Fashion-MNIST or your own image folders.",
        epilog=EXAMPLES,
        formatter_class=_formatter,
    )
    p.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    sub.add_parser(
        "models", help="list the registered models with parameters and FLOPs", formatter_class=_formatter,
        epilog="example:\n  cnnlab models",
    )

    t = sub.add_parser(
        "train", help="train one or more models on MNIST, Fashion-MNIST or an image folder", formatter_class=_formatter,
        epilog="examples:\n  cnnlab train --model lecture\n  cnnlab train --model resnet_bn --dataset fashion-mnist\n  cnnlab train --model resnet --epochs 5 --seed 1\n"
        "  cnnlab train --model inception_net --time-budget 60\n"
        "  cnnlab train --resume runs/20260101-120000-resnet     # continue a run that was stopped\n"
        "  torchrun --standalone --nproc-per-node 2 -m cnnlab train --model resnet   # data-parallel, 2 processes",
    )
    t.add_argument(
        "--model", nargs="+", metavar="NAME",
        help=f"model(s) to train; 'lecture' = the lecture's three, 'all' = every one (default: resnet; "
        f"choices: {', '.join(list_models())})",
    )
    t.add_argument(
        "--dataset", type=_dataset, metavar="NAME",
        help=f"{dataset_usage()}: the official sets are verified by hash; imagefolder:PATH is a folder of class folders "
        "of images (default: mnist)",
    )
    t.add_argument("--recipe", choices=RECIPES, help="training recipe (default: default)")
    _add_run_flags(t)
    _add_device(t)
    t.add_argument(
        "--resume", metavar="RUN_DIR",
        help="continue a stopped run from its last finished epoch, with its own settings (default: off)",
    )
    _add_data_dir(t)
    t.add_argument("--out", default="runs", help="where run directories are created (default: runs)")
    t.add_argument(
        "--no-progress", action="store_true",
        help="no progress bars; the line after each epoch is still printed. Without it, bars are drawn on a "
        "terminal, and output to a file or pipe gets the per-epoch lines alone (default: off)",
    )

    e = sub.add_parser(
        "evaluate", help="test accuracy, per-class accuracy, confused pairs, confusion.png", formatter_class=_formatter,
        epilog="example:\n  cnnlab evaluate runs/20260101-120000-resnet/best.pt",
    )
    _add_checkpoint(e)
    _add_data_dir(e)
    _add_device(e)
    e.add_argument("--out", help="where to write confusion.png (default: beside the checkpoint)")
    e.add_argument(
        "--tta-hflip", action=argparse.BooleanOptionalAction,
        help="average each test image's logits with its mirror image's, or not (default: as the model was trained)",
    )

    c = sub.add_parser(
        "compare", help="table and overlaid curves of finished runs", formatter_class=_formatter,
        epilog="example:\n  cnnlab compare runs/*-resnet runs/*-inception_net\n\n"
        "Unfinished runs (stopped, or still training) are skipped, each named on stderr with the reason.",
    )
    c.add_argument(
        "runs", nargs="+", metavar="RUN_DIR",
        help="run directories written by cnnlab train; those that are not finished runs are skipped",
    )
    c.add_argument("--out", default="compare.png", help="figure path (default: compare.png)")

    pr = sub.add_parser(
        "predict", help="classify your own images (digits, clothes, or an image-folder model's classes)", formatter_class=_formatter,
        epilog="examples:\n  cnnlab predict runs/20260101-120000-resnet photo.jpg drawing.png\n"
        "  cnnlab predict runs/20260101-120000-resnet *.png --json",
    )
    _add_checkpoint(pr)
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...; any size, dark on light or light on dark)")
    pr.add_argument("--json", action="store_true", help="one JSON document on stdout instead of text (default: off)")
    pr.add_argument("--top", type=_in(Range(1, 1000, whole=True)), default=3, help="classes to show per image (default: 3)")
    pr.add_argument("--save-input", metavar="DIR",
                    help="also write the image the model saw (28x28 for MNIST), per image, as DIR/<file name>-<W>x<H>.png: "
                    "a.png -> a.png-28x28.png, a.jpg -> a.jpg-28x28.png; a name given again gets -2, -3 (default: off)")
    _add_device(pr, "cpu")

    sv = sub.add_parser(
        "serve", help="a web page to draw on, look inside the networks and train them, and a JSON API",
        formatter_class=_formatter,
        epilog="examples:\n  cnnlab serve                                   # the newest finished run of each model under runs/\n"
        "  cnnlab serve runs/*-resnet runs/*-inception_net --port 8000",
    )
    sv.add_argument("runs", nargs="*", default=[], metavar="RUN",
                    help="run directories or checkpoint files to serve (default: the newest finished run of each model "
                    "under --runs-root; none there: the page opens ready to train one)")
    sv.add_argument("--runs-root", default="runs", help="where runs are looked for, and trainings from the page go (default: runs)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 opens it to your network (default: 127.0.0.1)")
    sv.add_argument("--port", type=_port, default=8000, help="port (default: 8000)")
    sv.add_argument("--allow-host", action="append", default=[], type=_host_name, metavar="NAME",
                    help="another name this server is reached by, as the browser's address bar has it (repeatable): "
                    "requests naming any other host are refused, which keeps other sites out through DNS rebinding "
                    "(default: only --host, and 127.0.0.1, localhost and [::1] when it is loopback or 0.0.0.0)")
    sv.add_argument("--no-training", dest="training", action="store_false",
                    help="refuse trainings from the page (default: allowed)")
    _add_device(sv, "cpu", threads=1)

    ex = sub.add_parser(
        "export", help="write the model as ONNX or TorchScript", formatter_class=_formatter,
        epilog="examples:\n  cnnlab export runs/20260101-120000-resnet --format onnx\n"
        "  cnnlab export runs/20260101-120000-resnet/best.pt --format torchscript --out resnet.torchscript.pt\n\n"
        "The exported model takes float32 pixels 0..255 of shape (N, C, S, S) and returns (N, classes) logits:\n"
        "(N, 1, 28, 28) and 10 for MNIST, white on black; an image-folder model takes its folder's channels and\n"
        "size. The standardisation is inside the graph and the batch size is free. export prints the shapes and\n"
        "stores them, the class names and the pixel convention in the file (ONNX metadata_props; TorchScript:\n"
        "the extra file cnnlab.json).",
    )
    _add_checkpoint(ex)
    ex.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="file format (required)")
    ex.add_argument(
        "--out", help="output file (default: <model>.onnx or <model>.torchscript.pt beside the checkpoint)",
    )
    _add_device(ex, "cpu")

    an = sub.add_parser(
        "analyze", help="measure the lecture's claims: cost, branches, depth", formatter_class=_formatter,
        epilog="examples:\n  cnnlab analyze cost\n  cnnlab analyze branches runs/*-inception_net\n"
        "  cnnlab analyze depth --depths 2 8 32 --steps 300",
    )
    asub = an.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS", parser_class=_Parser)
    ac = asub.add_parser("cost", help="parameters, multiply-adds and FLOPs per model, block and branch; the 1x1 claim",
                         formatter_class=_formatter)
    ac.add_argument("--model", nargs="+", metavar="NAME", help="models (default: all)")
    ac.add_argument("--out", default="analysis", help="directory for cost.png (default: analysis)")
    ab = asub.add_parser("branches", help="what each Inception branch contributes in trained inception_net or inception_bn models",
                         formatter_class=_formatter,
                         epilog="Train with --record-branch-grads to get each branch's share of the gradient too.")
    ab.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoints or run directories (one per seed)")
    ab.add_argument("--out", default="analysis", help="directory for branches.png (default: analysis)")
    _add_device(ab)
    _add_data_dir(ab)
    ad = asub.add_parser("depth", help="plain against residual stacks: gradient per layer, training against depth",
                         formatter_class=_formatter)
    _add_depth_args(ad)
    ad.add_argument("--out", default="analysis", help="directory for the figures (default: analysis)")
    _add_device(ad)
    _add_data_dir(ad)
    _add_named_dataset(ad)

    rp = sub.add_parser(
        "report", help="run every analysis and write one Markdown report with its figures", formatter_class=_formatter,
        epilog="examples:\n  cnnlab report\n  cnnlab report --runs runs/*-resnet runs/*-inception_net --checkpoints runs/*-inception_net",
    )
    rp.add_argument("--out", default="report", help="report directory (default: report)")
    rp.add_argument("--runs", nargs="+", metavar="RUN_DIR", help="runs to compare (default: train each model for --budget seconds)")
    rp.add_argument("--checkpoints", nargs="+", metavar="CHECKPOINT",
                    help="inception_net models for the branch analysis (default: train --seeds of them with --record-branch-grads)")
    rp.add_argument("--seeds", type=_in(Range(1, 100, whole=True)), default=3,
                    help="inception_net seeds trained for the branch analysis (default: 3)")
    budget = setting_range("time_budget")  # each model is trained with this --time-budget
    rp.add_argument("--budget", type=_in(Range(0, budget.high, above=True)), default=60.0,
                    help="seconds per model trained by the report (default: 60)")
    _add_depth_args(rp)
    _add_device(rp)
    _add_data_dir(rp)
    _add_named_dataset(rp)
    return p


def _add_depth_args(p: argparse.ArgumentParser) -> None:
    from cnnlab.analysis.depth import DEPTHS, STEPS, WIDTHS

    p.add_argument("--depths", nargs="+", type=_even_depth, default=[2, 4, 8, 16, 32],
                   help=f"conv layers, even, up to {DEPTHS.high:g} (default: 2 4 8 16 32)")
    p.add_argument("--steps", type=_in(STEPS), default=200, help="training steps per network (default: 200)")
    p.add_argument("--width", type=_in(WIDTHS), default=16, help=f"channels of every layer, up to {WIDTHS.high:g} (default: 16)")
    p.add_argument("--batch-norm", action="store_true", help="add batch norm after every conv (default: off)")


def _even_depth(s: str) -> int:
    from cnnlab.analysis.depth import DEPTHS

    v = _in(DEPTHS)(s)
    if v % 2:
        raise argparse.ArgumentTypeError(f"a depth counts convs in blocks of two, so it must be even, got {v}")
    return v


def _dataset(s: str) -> str:
    from cnnlab.data import lookup

    try:
        return lookup(s).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _port(s: str) -> int:
    v = _parsed(s, int, "a whole number")
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1..65535, got {v}")
    return v


def _add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint file, or a run directory (uses its best.pt)")


def _add_named_dataset(p: argparse.ArgumentParser) -> None:
    from cnnlab.data import entries

    named = tuple(e.name for e in entries() if not e.takes_path)
    p.add_argument("--dataset", choices=named, default="mnist", help="data set (default: mnist)")


# Why some commands default to the CPU: one picture at a time (predict, serve) is faster there than a round trip to
# a GPU, and a TorchScript file traced on a GPU runs only on one (export).
_CPU_DEFAULT_WHY = "; one picture at a time is faster on the CPU, and an export traced there runs anywhere"


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """A flag for each TrainConfig field declared as one (config.run_flags); not given, it keeps the recipe's value."""
    from cnnlab.config import run_flags

    for f in run_flags():
        kind, extra = f.metadata["kind"], {}
        if kind == "bool":
            extra["action"] = argparse.BooleanOptionalAction
        elif isinstance(kind, tuple):
            extra["choices"] = kind
        elif kind == "name":  # a run's name: one plain folder name
            extra["type"] = _run_name
        else:  # a number: parsed, then checked against the range the field declares
            extra["type"] = _in(f.metadata["range"])
        if f.metadata["metavar"]:
            extra["metavar"] = f.metadata["metavar"]
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None, help=f.metadata["help"], **extra)


def _add_device(p: argparse.ArgumentParser, default: str = "auto", threads: int = 0) -> None:
    """--device and --threads, meaning the same in every command that runs a model (cnnlab.device)."""
    from cnnlab.device import DEVICES

    why = _CPU_DEFAULT_WHY if default == "cpu" else ""
    p.add_argument("--device", default=default, choices=DEVICES,
                   help=f"where the model runs; auto = CUDA, then MPS, then the CPU (default: {default}{why})")
    p.add_argument("--threads", type=_threads, default=threads,
                   help=f"PyTorch's CPU threads; 0 = one per core, kept for the whole run (train --adapt-threads: up to this "
                        f"many, fitted to the cores other programs leave free) (default: {threads})")


def _run_name(s: str) -> str:
    from cnnlab.runs.rundir import check_run_name

    try:
        return check_run_name(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _threads(s: str) -> int:
    from cnnlab.config import setting_range

    return _in(setting_range("threads"))(s)  # TrainConfig.threads: what a run records


def _use_device(args: argparse.Namespace) -> str:
    """Apply --threads and check --device once, before any work (an absent GPU is one line, not a traceback
    later); returns the device name for the library calls, which resolve it the same way."""
    from cnnlab.device import resolve_device, use_threads

    resolve_device(args.device)
    use_threads(args.threads)
    return args.device


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="a directory holding the data set's four IDX files, gzipped or not; for a run trained on an image "
        "folder that has moved since, the folder's new place (default: cache, then download; the run's folder)",
    )


def _parsed(s: str, parse, what: str):
    try:
        return parse(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None


def _in(values):
    """An argparse type for a number in `values` (a config.Range): parsed as a whole number or a float, then checked,
    so that a value out of range is a usage error (one line, exit 2) before any work."""

    def parse(s: str):
        v = _parsed(s, int, "a whole number") if values.whole else _parsed(s, float, "a number")
        problem = values.problem(v)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return v

    return parse


def cmd_models(args: argparse.Namespace) -> int:
    from cnnlab.analysis.cost import forward_flops
    from cnnlab.models import count_parameters, create_model, list_models
    from cnnlab.tables import format_table

    rows = []
    for name in list_models():
        m = create_model(name)
        flops = forward_flops(m)
        rows.append([name, f"{count_parameters(m):,}", f"{flops:,}", f"{flops // 2:,}"])
    print(format_table(["model", "parameters", "FLOPs/image", "multiply-adds/image"], rows))
    print("\nFLOPs of one forward pass on a 1x28x28 image (torch.utils.flop_counter: convolutions and linear layers;")
    print("a multiply-add counts as 2 FLOPs).")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from cnnlab.analysis.compare import COMPARE_HEADERS, compare_rows, plot_compare
    from cnnlab.tables import format_table
    from cnnlab.train.session import train

    if args.resume:  # what a run is comes from the run: its model, data, recipe and every run flag
        from cnnlab.config import run_flags

        names = ["model", "dataset", "recipe", *(f.name for f in run_flags())]
        given = [f"--{f.replace('_', '-')}" for f in names if getattr(args, f) is not None]
        if given:
            raise _UserError(f"--resume continues a run with its own settings; drop {', '.join(given)}")
    configs = [] if args.resume else train_configs(args, _train_models(args))
    session = train(
        configs, resume_from=args.resume, out_root=args.out, progress="lines" if args.no_progress else True,
        device=args.device, threads=args.threads, data_dir=args.data_dir,
    )
    if not session.is_main:
        return 0
    for r in session.results:
        print(_closing_line(r))
    runs = session.runs()
    print()
    print(format_table(COMPARE_HEADERS, compare_rows(runs)))
    if len(runs) > 1:
        fig = Path(args.out) / "compare.png"
        plot_compare(runs, fig)
        print(f"\ncurves of all runs: {fig}")
    return 0


# Chosen and final test accuracy this far apart (or a collapse) and the closing line shows both: an epoch chosen
# on a few dozen validation images must not hide how the run ended.
_FINAL_GAP = 0.05


def _closing_line(r) -> str:
    """A finished run in one line: the chosen epoch's test accuracy, and the final epoch's beside it when they
    differ a lot or training collapsed."""
    chosen = "validation" if r.best_val_acc == r.best_val_acc else "being last"
    line = f"{r.model}: test accuracy {100 * r.test_acc:.2f}% (epoch {r.best_epoch}, chosen by {chosen})"
    if r.best_epoch != r.epochs and (r.collapsed_at_epoch is not None or abs(r.test_acc - r.final_test_acc) >= _FINAL_GAP):
        line += f", {100 * r.final_test_acc:.2f}% at the final epoch {r.epochs}"
    if r.collapsed_at_epoch is not None:
        line += f"; training was at chance from epoch {r.collapsed_at_epoch} on"
    return line + f" in {r.train_seconds:.0f}s -> {r.run_dir}"


def _train_models(args: argparse.Namespace) -> list[str]:
    """The models a new run trains, after the usage checks that need no data: one length flag, an image
    folder named once, known model names."""
    from cnnlab.data import lookup
    from cnnlab.models import lecture_models, list_models

    lengths = [f for f, v in (("--epochs", args.epochs), ("--steps", args.steps), ("--time-budget", args.time_budget)) if v]
    if len(lengths) > 1:
        raise _UserError(f"give one of --epochs, --steps and --time-budget, not {' and '.join(lengths)}")
    if args.data_dir and args.dataset and lookup(args.dataset).entry.takes_path:
        raise _UserError("a new run names its image folder in --dataset imagefolder:PATH; --data-dir gives a "
                         "resumed run's folder a new place")
    named = {"all": list_models(), "lecture": lecture_models()}
    models = [m for name in (args.model or ["resnet"]) for m in named.get(name, [name])]
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise _UserError(f"unknown model {unknown[0]!r}; choose from: {', '.join(list_models())}, lecture or all")
    return models


def train_configs(args: argparse.Namespace, models: list[str]) -> list:
    """The TrainConfig of each model from the train command's flags (a flag not given keeps the recipe's value)."""
    from cnnlab.config import make_config, run_flags

    given = {f.name: getattr(args, f.name) for f in run_flags()}
    where = dict(device=args.device, threads=args.threads, data_dir=args.data_dir)
    return [make_config(m, args.recipe or "default", args.dataset or "mnist", **given, **where) for m in models]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cnnlab.analysis.evaluation import evaluate_model, plot_confusion
    from cnnlab.runs import checkpoint_dir, load_model, training_data
    from cnnlab.tables import format_table

    ckpt = Path(args.checkpoint)
    model, cfg, state = load_model(ckpt, _use_device(args))  # a bad checkpoint fails here, before any data is loaded
    if args.tta_hflip is not None:
        cfg = dataclasses.replace(cfg, tta_hflip=args.tta_hflip)
    # The test set of the data the model was trained on (an image folder's split and size come from the run).
    data = training_data(cfg, args.data_dir, progress=True, classes=state.get("classes"))  # a changed folder: refused
    ev = evaluate_model(model, cfg, data)
    mirrored = ", each averaged with its mirror image" if cfg.tta_hflip else ""
    print(f"{ev.model}: test accuracy {100 * ev.accuracy:.2f}% on {len(data.test_labels):,} {data.title} test images{mirrored}\n")
    name = (lambda k: str(k)) if data.classes[0] == "0" else (lambda k: f"{k} {data.classes[k]}")
    print(format_table(["class", "accuracy"], [[name(k), f"{100 * a:.2f}%"] for k, a in enumerate(ev.per_class)]))
    if ev.confused_pairs:
        print("\nmost confused (true -> predicted: count)")
        for t, p, n in ev.confused_pairs:
            print(f"  {name(t)} -> {name(p)}: {n}")
    out = Path(args.out) if args.out else checkpoint_dir(ckpt)
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(ev, out / "confusion.png")
    print(f"\nconfusion matrix: {out / 'confusion.png'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from cnnlab.analysis.compare import COMPARE_HEADERS, compare_rows, plot_compare
    from cnnlab.runs import load_runs
    from cnnlab.tables import format_table

    runs, skipped = load_runs(args.runs)  # none to compare: RunDirError, one line
    for reason in skipped:
        print(f"cnnlab compare: skipped: {reason}", file=sys.stderr)
    print(format_table(COMPARE_HEADERS, compare_rows(runs)))
    plot_compare(runs, args.out)
    print(f"\ncurves: {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from cnnlab.inference.predictor import Predictor, input_names
    from cnnlab.data.tensors.pictures import ImageError

    predictor = Predictor(args.checkpoint, _use_device(args))  # a bad checkpoint fails before any image is read
    save_dir = _save_input_dir(args.save_input)
    results, failed = [], 0
    for path, name in zip(args.images, input_names(args.images)):
        try:
            pred = predictor.predict_file(path, save_dir, name)
        except ImageError as e:  # one line for this file; the others are still predicted
            failed += 1
            message = f"{path}: {e}"
            results.append({"image": path, "error": message})
            if not args.json:
                print(f"cnnlab predict: error: {message}", file=sys.stderr)
            continue
        results.append({"image": path, **pred.as_dict(args.top)})
        if not args.json:
            top = "  ".join(f"{g.name}: {100 * g.probability:5.1f}%" for g in pred.top(args.top))
            print(f"{path}: {pred.name}    ({top})")
    if args.json:
        print(json.dumps({"model": {**predictor.info, "checkpoint": str(args.checkpoint)}, "predictions": results}, indent=2))
    return 1 if failed else 0


def _save_input_dir(arg: str | None) -> Path | None:
    """The --save-input directory, made now: a path that cannot be one is refused before any image is predicted."""
    if arg is None:
        return None
    out = Path(arg)
    if out.exists() and not out.is_dir():
        raise _UserError(f"--save-input {arg} is a file; give a directory (it is made if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _UserError(f"--save-input {arg}: cannot make the directory ({e.strerror or e})") from None
    return out


def _host_name(s: str) -> str:
    """An --allow-host name: a host name or address, without a port (any port is accepted)."""
    from cnnlab.serve.server import split_host

    split = split_host(s)
    if split is None or split[1] is not None:
        raise argparse.ArgumentTypeError(f"expected a host name or address without a port (any port is accepted), got {s!r}")
    return split[0]


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401

        from cnnlab.serve.app import create_app
        from cnnlab.serve.server import exposure_warning, run
    except ImportError as e:
        raise _UserError(f"serving needs FastAPI and uvicorn ({e.name} is missing): pip install fastapi uvicorn") from None

    # --threads defaults to 1 here: one image is tiny, so parallelism comes from concurrent requests
    app = create_app(args.runs, args.runs_root, training=args.training, device=_use_device(args), host=args.host,
                     allow_hosts=args.allow_host)  # bad runs fail here
    for line in app.state.skipped:
        print(f"cnnlab serve: skipped {line}", file=sys.stderr)
    served = [m["id"] for m in app.state.shelf.describe()]
    what = ", ".join(served) if served else f"no model yet (none finished under {args.runs_root}/): train one on the page"
    print(f"cnnlab serve: {what} at http://{args.host}:{args.port}/ (Ctrl-C stops)")
    warning = exposure_warning(args.host)
    if warning:
        print(f"cnnlab serve: {warning}", file=sys.stderr)
    run(app, args.host, args.port)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from cnnlab.inference.export import TORCHSCRIPT_METADATA, export_model

    done = export_model(args.checkpoint, args.format, args.out, _use_device(args))
    print(f"wrote {done.path} ({done.path.stat().st_size:,} bytes): {done.contract.summary()}")
    print(f"pixels: {done.contract.pictures()}; standardisation{' and mirror averaging' if done.contract.tta_hflip else ''} "
          "inside the graph")
    where = "its metadata_props" if args.format == "onnx" else f"its extra file {TORCHSCRIPT_METADATA}"
    print(f"class names, shapes and pixel convention are stored in the file ({where})")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from cnnlab.analysis import report
    from cnnlab.device import resolve_device

    out = Path(args.out)
    if args.analysis == "cost":
        from cnnlab.models import list_models

        unknown = [m for m in (args.model or []) if m not in list_models()]
        if unknown:
            raise _UserError(f"unknown model {unknown[0]!r}; choose from: {', '.join(list_models())}")
        print(report.cost_section(out, args.model))
        print(f"figure: {out / 'cost.png'}")
        return 0
    from cnnlab.data import load_data

    device = _use_device(args)  # an absent device is one line before any data is loaded
    if args.analysis == "branches":  # the data the first model was trained on, an image folder's split included
        from cnnlab.config import TrainConfig
        from cnnlab.runs import load_checkpoint, training_data

        first = load_checkpoint(args.checkpoints[0])
        data = training_data(TrainConfig.from_dict(first["config"]), args.data_dir, classes=first.get("classes"))
    else:
        data = load_data(args.dataset, args.data_dir)
    if args.analysis == "branches":
        print(report.branches_section(args.checkpoints, data, out, device))
        print(f"figure: {out / 'branches.png'}")
    else:
        print(report.depth_section(data, out, tuple(args.depths), steps=args.steps, width=args.width, batch_norm=args.batch_norm,
                                   device=resolve_device(device)))
        print(f"figures: {out / 'depth_gradients.png'}, {out / 'depth_training.png'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cnnlab.analysis.report import make_report
    from cnnlab.data import load_data

    device = _use_device(args)
    data = load_data(args.dataset, args.data_dir)
    path = make_report(
        Path(args.out), data, runs=args.runs, checkpoints=args.checkpoints, seeds=args.seeds, budget=args.budget,
        depths=tuple(args.depths), steps=args.steps, width=args.width, batch_norm=args.batch_norm,
        device=device,
    )
    print(f"report: {path}")
    return 0


class _UserError(Exception):
    pass


COMMANDS = {
    "models": cmd_models,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "compare": cmd_compare,
    "predict": cmd_predict,
    "serve": cmd_serve,
    "export": cmd_export,
    "analyze": cmd_analyze,
    "report": cmd_report,
}


# How long an OpenMP thread spins at a barrier before it sleeps (libgomp's default: 300,000 spins). A run keeps its
# thread count, so that a seed repeats to the digit; beside a busy core, a thread that spins so long while its partner
# waits for that core costs every operator a time slice. On the 2-core Intel Xeon (family 6, model 167) of
# benchmarks/results/busy, resnet --steps 400 beside one busy core took 67.8 s (22.2 and 113.4 s) at the default
# and 21.4 s (19.9 and 23.0 s) at 10,000, idle 5.98 s against 6.06 s (median of 5 pairs); no digit changes.
# Read when libgomp loads (with torch), so set before any command imports it; a value the user set is kept.
GOMP_SPINCOUNT = "10000"


def entry() -> None:
    """The `cnnlab` command and `python -m cnnlab`: main(), then exit without Python's last garbage collection.

    When it exits, Python runs the cycle collector over every object once more; with torch loaded that takes
    0.3-0.4 s, a twentieth of a short training's wall time. By then the command has closed what it wrote (every
    file through a context manager), so the objects can go with the process. gc.freeze() takes them out of that
    collection only: atexit handlers, the modules' teardown and the flush of stdout still run. Here rather than in
    main(), which tests and notebooks call in a process that goes on. Before main(), OpenMP's spin count
    (GOMP_SPINCOUNT), which torch's import fixes for the process and the processes it starts.
    """
    os.environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT)
    code = main()
    import gc

    gc.freeze()
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    code = _main(argv)
    dist = sys.modules.get("cnnlab.train.distributed")  # imported only by commands that may train
    if dist is not None and dist.joined():
        dist.leave(code)  # a torchrun worker: exit without racing gloo's threads in the teardown
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from cnnlab.data import DataError
    from cnnlab.inference.export import ExportError
    from cnnlab.runs import CheckpointError, RunDirBusy, RunDirError

    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader that left shows here, where it is handled, not in Python's exit flush
        return code
    except _UserError as e:
        print(f"cnnlab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout's reader left (`cnnlab evaluate ... | head`): end quietly, as Unix tools do
        import contextlib
        import os

        # What is left in stdout's buffer would raise again in Python's exit flush; the signal module's
        # documentation sends it to /dev/null. A stdout without a descriptor (a library caller's) has no pipe.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the status of a tool the signal ended
    except (DataError, CheckpointError, RunDirError, RunDirBusy, ExportError, ValueError, FloatingPointError, OSError) as e:
        print(f"cnnlab {args.command}: error: {e}", file=sys.stderr)
        _print_stop_advice(args.command, e)
        return 1
    except KeyboardInterrupt as e:
        # On a terminal the ^C echo (or a bar) may hold the cursor mid-line: start a fresh one.
        fresh_line = "\n" if sys.stderr.isatty() else ""
        print(f"{fresh_line}cnnlab {args.command}: interrupted", file=sys.stderr)
        _print_stop_advice(args.command, e)
        return 130
    except Exception as e:
        from cnnlab.train.distributed import is_lost_peer

        if not is_lost_peer(e):
            raise
        import re

        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        reason = re.sub(r"^\[[^\]]*\]\s*", "", reason)[:160]  # drop gloo's "[/path/pair.cc:537]" prefix
        print(f"cnnlab {args.command}: error: lost contact with another training process ({reason})", file=sys.stderr)
        _print_stop_advice(args.command, e)
        return 1


def _print_stop_advice(command: str, e: BaseException) -> None:
    """Where the run that `e` stopped is and the command that continues it, the command on a line of its own."""
    progress = sys.modules.get("cnnlab.train.progress")  # not imported: nothing was trained, so no run was stopped
    for i, line in enumerate(progress.stop_advice(e) if progress else []):
        print(f"cnnlab {command}: {line}" if i == 0 else line, file=sys.stderr)
