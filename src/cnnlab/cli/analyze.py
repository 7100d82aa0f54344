"""cnnlab analyze: the lecture's claims measured, one analysis each: cost, branches, depth."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnlab.cli.args import (Parser, UsageError, add_data_dir, add_depth_args, add_device, add_named_dataset, formatter,
                             use_device)
from cnnlab.cli.train import may_train

HELP = "measure the lecture's claims: cost, branches, depth"
EPILOG = ("examples:\n  cnnlab analyze cost\n  cnnlab analyze branches runs/*-inception_net\n"
          "  cnnlab analyze depth --depths 2 8 32 --steps 300")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS", parser_class=Parser)
    cost = sub.add_parser("cost", help="parameters, multiply-adds and FLOPs per model, block and branch; the 1x1 claim",
                          formatter_class=formatter)
    cost.add_argument("--model", nargs="+", metavar="NAME",
                      help="models (default: the lecture's, the batch-norm ones and designed; cnnlab models lists all)")
    cost.add_argument("--out", default="analysis", help="directory for cost.png (default: analysis)")
    branches = sub.add_parser("branches", help="what each Inception branch contributes in trained inception_net or "
                              "inception_bn models", formatter_class=formatter,
                              epilog="Train with --record-branch-grads to get each branch's share of the gradient too.")
    branches.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoints or run directories (one per seed)")
    branches.add_argument("--out", default="analysis", help="directory for branches.png (default: analysis)")
    add_device(branches)
    add_data_dir(branches)
    depth = sub.add_parser("depth", help="plain against residual stacks: gradient per layer, training against depth",
                           formatter_class=formatter)
    add_depth_args(depth)
    depth.add_argument("--out", default="analysis", help="directory for the figures (default: analysis)")
    add_device(depth)
    add_data_dir(depth)
    add_named_dataset(depth)


@may_train  # depth trains its stacks of every depth
def run(args: argparse.Namespace) -> int:
    return {"cost": _cost, "branches": _branches, "depth": _depth}[args.analysis](args, Path(args.out))


def _cost(args: argparse.Namespace, out: Path) -> int:
    from cnnlab.analysis import report
    from cnnlab.models import list_models

    unknown = [m for m in (args.model or []) if m not in list_models()]
    if unknown:
        raise UsageError(f"unknown model {unknown[0]!r}; choose from: {', '.join(list_models())}")
    print(report.cost_section(out, args.model))
    print(f"figure: {out / 'cost.png'}")
    return 0


def _branches(args: argparse.Namespace, out: Path) -> int:
    from cnnlab.analysis import report
    from cnnlab.runs import load

    device = use_device(args)  # an absent device is one line before any data is loaded
    # The data the first model was trained on, an image folder's split included.
    data = load(args.checkpoints[0], "cpu").load_data(args.data_dir)
    print(report.branches_section(args.checkpoints, data, out, device))
    print(f"figure: {out / 'branches.png'}")
    return 0


def _depth(args: argparse.Namespace, out: Path) -> int:
    from cnnlab.analysis import report
    from cnnlab.data import load_data
    from cnnlab.device import resolve_device

    device = use_device(args)  # an absent device is one line before any data is loaded
    data = load_data(args.dataset, args.data_dir)
    print(report.depth_section(data, out, tuple(args.depths), steps=args.steps, width=args.width, batch_norm=args.batch_norm,
                               device=resolve_device(device)))
    print(f"figures: {out / 'depth_gradients.png'}, {out / 'depth_training.png'}")
    return 0
