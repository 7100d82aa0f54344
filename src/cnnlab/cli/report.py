"""cnnlab report: every analysis, and runs it trains itself, in one Markdown report with its figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnlab.cli.args import add_data_dir, add_depth_args, add_device, add_named_dataset, in_range, use_device
from cnnlab.cli.train import may_train

HELP = "run every analysis and write one Markdown report with its figures"
EPILOG = ("examples:\n  cnnlab report\n"
          "  cnnlab report --runs runs/*-resnet runs/*-inception_net --checkpoints runs/*-inception_net")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cnnlab.config import Range, setting_range

    p.add_argument("--out", default="report", help="report directory (default: report)")
    p.add_argument("--runs", nargs="+", metavar="RUN_DIR", help="runs to compare (default: train each model for --budget seconds)")
    p.add_argument("--checkpoints", nargs="+", metavar="CHECKPOINT",
                   help="inception_net models for the branch analysis (default: train --seeds of them with --record-branch-grads)")
    p.add_argument("--seeds", type=in_range(Range(1, 100, whole=True)), default=3,
                   help="inception_net seeds trained for the branch analysis (default: 3)")
    budget = setting_range("time_budget")  # each model is trained with this --time-budget
    p.add_argument("--budget", type=in_range(Range(0, budget.high, above=True)), default=60.0,
                   help="seconds per model trained by the report (default: 60)")
    add_depth_args(p)
    add_device(p)
    add_data_dir(p)
    add_named_dataset(p)


@may_train  # the runs to compare and the inception_net seeds, when they are not given
def run(args: argparse.Namespace) -> int:
    from cnnlab.analysis.report import make_report
    from cnnlab.data import load_data

    device = use_device(args)
    data = load_data(args.dataset, args.data_dir)
    path = make_report(
        Path(args.out), data, runs=args.runs, checkpoints=args.checkpoints, seeds=args.seeds, budget=args.budget,
        depths=tuple(args.depths), steps=args.steps, width=args.width, batch_norm=args.batch_norm,
        device=device,
    )
    print(f"report: {path}")
    return 0
