"""The `cnnlab` command: parse, call the library, print. No logic of its own.

One module per command (cli/<command>.py: its HELP, EPILOG, arguments and `run`), the arguments several share in
cli/args.py; here the top-level parser, the entry, and the one place where an error becomes an exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from cnnlab.cli import analyze, compare, evaluate, export, models, predict, report, serve, study, train
from cnnlab.cli.args import Parser, formatter
from cnnlab.errors import CnnlabError

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
  cnnlab study identity-mappings                # the reading list: residual units side by side, beside the paper
"""

# The commands, in the order --help lists them.
COMMANDS = {
    "models": models,
    "train": train,
    "evaluate": evaluate,
    "compare": compare,
    "predict": predict,
    "serve": serve,
    "export": export,
    "analyze": analyze,
    "report": report,
    "study": study,
}


def build_parser() -> argparse.ArgumentParser:
    from cnnlab import __version__

    p = Parser(
        prog="cnnlab",
        description="The Inception and residual networks of the lecture 'CNN, advanced', trained on real MNIST, "
        "Fashion-MNIST or your own image folders.",
        epilog=EXAMPLES,
        formatter_class=formatter,
    )
    p.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.HELP, epilog=command.EPILOG, formatter_class=formatter))
    return p


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
    args = build_parser().parse_args(argv)
    return answered(args.command, COMMANDS[args.command].run, args)


def answered(command: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace,
             advice: Callable[[BaseException], list[str]] = lambda e: []) -> int:
    """`run(args)`'s exit status, an error's included: the one place where an error becomes one. A CnnlabError (a
    user's mistake or a refused input) is one line on stderr and its exit_code, as is the ValueError,
    FloatingPointError or OSError of a check (1); Ctrl-C is 130, a reader that left stdout 141. Any other error is a
    bug, and keeps its traceback. `advice(error)`: lines printed after the error's (cli/train.may_train: where the
    run it stopped is)."""
    try:
        code = run(args)
        sys.stdout.flush()  # a reader that left shows here, where it is handled, not in Python's exit flush
        return code
    except BrokenPipeError:  # stdout's reader left (`cnnlab evaluate ... | head`): end quietly, as Unix tools do
        return _reader_left()
    except (CnnlabError, ValueError, FloatingPointError, OSError) as e:
        print(f"cnnlab {command}: error: {e}", file=sys.stderr)
        _print_advice(command, advice(e))
        return e.exit_code if isinstance(e, CnnlabError) else 1
    except KeyboardInterrupt as e:
        # On a terminal the ^C echo (or a bar) may hold the cursor mid-line: start a fresh one.
        fresh_line = "\n" if sys.stderr.isatty() else ""
        print(f"{fresh_line}cnnlab {command}: interrupted", file=sys.stderr)
        _print_advice(command, advice(e))
        return 130


def _reader_left() -> int:
    import contextlib

    # What is left in stdout's buffer would raise again in Python's exit flush; the signal module's
    # documentation sends it to /dev/null. A stdout without a descriptor (a library caller's) has no pipe.
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, the status of a tool the signal ended


def _print_advice(command: str, lines: list[str]) -> None:
    """The advice's first line named by the command, the others (a command to copy) on lines of their own."""
    for i, line in enumerate(lines):
        print(f"cnnlab {command}: {line}" if i == 0 else line, file=sys.stderr)
