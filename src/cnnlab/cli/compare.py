"""cnnlab compare: a table and overlaid curves of finished runs."""

from __future__ import annotations

import argparse
import sys

HELP = "table and overlaid curves of finished runs"
EPILOG = ("example:\n  cnnlab compare runs/*-resnet runs/*-inception_net\n\n"
          "Unfinished runs (stopped, or still training) are skipped, each named on stderr with the reason.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "runs", nargs="+", metavar="RUN_DIR",
        help="run directories written by cnnlab train; those that are not finished runs are skipped",
    )
    p.add_argument("--out", default="compare.png", help="figure path (default: compare.png)")


def run(args: argparse.Namespace) -> int:
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
