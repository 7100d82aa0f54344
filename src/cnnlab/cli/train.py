"""cnnlab train: train one or more models, then their closing lines and a comparison table. Also the wrapper of
every command that may train (`may_train`: train, analyze, report): what a stopped run leaves and how to continue
it, and a torchrun worker's way out."""

from __future__ import annotations

import argparse
import functools
import re
from pathlib import Path
from typing import Callable

from cnnlab.cli.args import UsageError, add_data_dir, add_device, add_run_flags, dataset
from cnnlab.errors import CnnlabError

HELP = "train one or more models on MNIST, Fashion-MNIST or an image folder"
EPILOG = (
    "examples:\n  cnnlab train --model lecture\n  cnnlab train --model resnet_bn --dataset fashion-mnist\n"
    "  cnnlab train --model resnet --epochs 5 --seed 1\n"
    "  cnnlab train --model inception_net --time-budget 60\n"
    "  cnnlab train --resume runs/20260101-120000-resnet     # continue a run that was stopped\n"
    "  torchrun --standalone --nproc-per-node 2 -m cnnlab train --model resnet   # data-parallel, 2 processes"
)

Run = Callable[[argparse.Namespace], int]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cnnlab.config import RECIPES
    from cnnlab.data.sets.registry import usage as dataset_usage
    from cnnlab.models import list_models

    p.add_argument(
        "--model", nargs="+", metavar="NAME",
        help=f"model(s) to train; 'lecture' = the lecture's three, 'all' = every one (default: resnet; "
        f"choices: {', '.join(list_models())})",
    )
    p.add_argument(
        "--dataset", type=dataset, metavar="NAME",
        help=f"{dataset_usage()}: the official sets are verified by hash; imagefolder:PATH is a folder of class folders "
        "of images (default: mnist)",
    )
    p.add_argument("--recipe", choices=RECIPES, help="training recipe (default: default)")
    add_run_flags(p)
    add_device(p)
    p.add_argument(
        "--resume", metavar="RUN_DIR",
        help="continue a stopped run from its last finished epoch, with its own settings (default: off)",
    )
    add_data_dir(p)
    p.add_argument("--out", default="runs", help="where run directories are created (default: runs)")
    p.add_argument(
        "--no-progress", action="store_true",
        help="no progress bars; the line after each epoch is still printed. Without it, bars are drawn on a "
        "terminal, and output to a file or pipe gets the per-epoch lines alone (default: off)",
    )


def may_train(run: Run) -> Run:
    """The run of a command that may train, answered here, before main would: the error's line is followed by where
    the run it stopped is and the command that continues it, and a torchrun worker then leaves its process group
    with that exit status (main answers the command again and finds its number)."""

    @functools.wraps(run)
    def answered_run(args: argparse.Namespace) -> int:
        from cnnlab.cli import answered

        code = answered(args.command, functools.partial(_naming_lost_peers, run), args, advice=_stop_advice)
        from cnnlab.train import distributed  # imported by now: the command trained, or loaded what trains

        if distributed.joined():
            distributed.leave(code)  # a torchrun worker: exit without racing gloo's threads in the teardown
        return code

    return answered_run


class LostPeer(CnnlabError):
    """torch.distributed's failed collective (another training process died or timed out), in one line."""

    def __init__(self, cause: BaseException) -> None:
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        reason = re.sub(r"^\[[^\]]*\]\s*", "", reason)[:160]  # drop gloo's "[/path/pair.cc:537]" prefix
        super().__init__(f"lost contact with another training process ({reason})")


def _naming_lost_peers(run: Run, args: argparse.Namespace) -> int:
    from cnnlab.train.distributed import is_lost_peer

    try:
        return run(args)
    except Exception as e:
        if not is_lost_peer(e):
            raise
        raise LostPeer(e) from e


def _stop_advice(e: BaseException) -> list[str]:
    """Where the run that `e` stopped is and the command that continues it (train/progress.stop_advice)."""
    from cnnlab.train.progress import stop_advice

    return stop_advice(e.__cause__ if isinstance(e, LostPeer) else e)


@may_train
def run(args: argparse.Namespace) -> int:
    from cnnlab.analysis.compare import COMPARE_HEADERS, compare_rows, plot_compare
    from cnnlab.tables import format_table
    from cnnlab.train.run import train

    _refuse_settings_on_resume(args)
    specs = [] if args.resume else train_specs(args, _train_models(args))
    session = train(
        specs, resume_from=args.resume, out_root=args.out, progress="lines" if args.no_progress else True,
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


def _refuse_settings_on_resume(args: argparse.Namespace) -> None:
    """What a run is comes from the run: its model, data, recipe and every run flag, none of them given again."""
    from cnnlab.config import run_flags

    if not args.resume:
        return
    names = ["model", "dataset", "recipe", *(f.name for f in run_flags())]
    given = [f"--{f.replace('_', '-')}" for f in names if getattr(args, f) is not None]
    if given:
        raise UsageError(f"--resume continues a run with its own settings; drop {', '.join(given)}")


def _train_models(args: argparse.Namespace) -> list[str]:
    """The models a new run trains, after the usage checks that need no data: one length flag, an image
    folder named once, known model names."""
    from cnnlab.models import lecture_models, list_models

    lengths = [f for f, v in (("--epochs", args.epochs), ("--steps", args.steps), ("--time-budget", args.time_budget)) if v]
    if len(lengths) > 1:
        raise UsageError(f"give one of --epochs, --steps and --time-budget, not {' and '.join(lengths)}")
    if args.data_dir and args.dataset and args.dataset.entry.takes_path:
        raise UsageError("a new run names its image folder in --dataset imagefolder:PATH; --data-dir gives a "
                         "resumed run's folder a new place")
    named = {"all": list_models(), "lecture": lecture_models()}
    models = [m for name in (args.model or ["resnet"]) for m in named.get(name, [name])]
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise UsageError(f"unknown model {unknown[0]!r}; choose from: {', '.join(list_models())}, lecture or all")
    return models


def train_specs(args: argparse.Namespace, models: list[str]) -> list:
    """The run of each model from the train command's flags (a flag not given keeps the recipe's value): a RunSpec
    holding the model's and the data set's registry entries, each name looked up once."""
    from cnnlab.config import make_spec, run_flags
    from cnnlab.data import lookup

    given = {f.name: getattr(args, f.name) for f in run_flags() if f.name != "dataset"}
    where = dict(device=args.device, threads=args.threads, data_dir=args.data_dir)
    dataset = args.dataset or lookup("mnist")
    return [make_spec(m, args.recipe or "default", dataset, **given, **where) for m in models]


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
