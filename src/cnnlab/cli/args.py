"""What several commands share: the parser class, the arguments that mean the same in every command that takes them
(--device and --threads, --data-dir, a checkpoint, the run flags, the depth sweep) and the parsers that check a
value before any work (a number in its range, a port, a run's name, a data set)."""

from __future__ import annotations

import argparse

from cnnlab.errors import CnnlabError


class UsageError(CnnlabError):
    """A usage mistake argparse cannot see (flags that exclude each other, an unknown model name): exit 2, as its."""

    exit_code = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


# Why some commands default to the CPU: one picture at a time (predict, serve) is faster there than a round trip to
# a GPU, and a TorchScript file traced on a GPU runs only on one (export).
_CPU_DEFAULT_WHY = "; one picture at a time is faster on the CPU, and an export traced there runs anywhere"


def add_device(p: argparse.ArgumentParser, default: str = "auto", threads: int = 0) -> None:
    """--device and --threads, meaning the same in every command that runs a model (cnnlab.device)."""
    from cnnlab.device import DEVICES

    why = _CPU_DEFAULT_WHY if default == "cpu" else ""
    p.add_argument("--device", default=default, choices=DEVICES,
                   help=f"where the model runs; auto = CUDA, then MPS, then the CPU (default: {default}{why})")
    p.add_argument("--threads", type=_threads, default=threads,
                   help=f"PyTorch's CPU threads; 0 = one per core, kept for the whole run (train --adapt-threads: up to this "
                        f"many, fitted to the cores other programs leave free) (default: {threads})")


def use_device(args: argparse.Namespace) -> str:
    """Check --device and apply it and --threads once, before any work (an absent GPU is one line, not a traceback
    later); returns the device name for the library calls, which resolve it the same way."""
    from cnnlab.device import configure, resolve_device

    configure(resolve_device(args.device), args.threads)
    return args.device


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="a directory holding the data set's four IDX files, gzipped or not; for a run trained on an image "
        "folder that has moved since, the folder's new place (default: cache, then download; the run's folder)",
    )


def add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint file, or a run directory (uses its best.pt)")


def add_named_dataset(p: argparse.ArgumentParser) -> None:
    from cnnlab.data import entries

    named = tuple(e.name for e in entries() if not e.takes_path)
    p.add_argument("--dataset", choices=named, default="mnist", help="data set (default: mnist)")


def add_run_flags(p: argparse.ArgumentParser) -> None:
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
        elif kind == "design":  # a block design (models/designed.py): read now, so that a bad one is a usage error
            extra["type"] = _design
        else:  # a number: parsed, then checked against the range the field declares
            extra["type"] = in_range(f.metadata["range"])
        if f.metadata["metavar"]:
            extra["metavar"] = f.metadata["metavar"]
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None, help=f.metadata["help"], **extra)


def add_depth_args(p: argparse.ArgumentParser) -> None:
    """The depth sweep's networks (analyze depth, report)."""
    from cnnlab.analysis.depth import DEPTHS, STEPS, WIDTHS

    p.add_argument("--depths", nargs="+", type=_even_depth, default=[2, 4, 8, 16, 32],
                   help=f"conv layers, even, up to {DEPTHS.high:g} (default: 2 4 8 16 32)")
    p.add_argument("--steps", type=in_range(STEPS), default=200, help="training steps per network (default: 200)")
    p.add_argument("--width", type=in_range(WIDTHS), default=16, help=f"channels of every layer, up to {WIDTHS.high:g} (default: 16)")
    p.add_argument("--batch-norm", action="store_true", help="add batch norm after every conv (default: off)")


def in_range(values):
    """An argparse type for a number in `values` (a config.Range): parsed as a whole number or a float, then checked,
    so that a value out of range is a usage error (one line, exit 2) before any work."""

    def parse(s: str):
        v = _parsed(s, int, "a whole number") if values.whole else _parsed(s, float, "a number")
        problem = values.problem(v)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return v

    return parse


def port(s: str) -> int:
    v = _parsed(s, int, "a whole number")
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1..65535, got {v}")
    return v


def dataset(s: str):
    """The data set a --dataset name names in the registry (imagefolder:PATH included), looked up here, once."""
    from cnnlab.data import lookup

    try:
        return lookup(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _run_name(s: str) -> str:
    from cnnlab.runs.rundir import check_run_name

    try:
        return check_run_name(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _design(s: str) -> str:
    """A block of your own design ("kind:...") read now; a family's depth and width ("depth=56,width=16") are
    checked against the model it is given to, once the models are known (ModelSpec.check_block)."""
    from cnnlab.models.designed import Design

    if ":" not in s:
        return s
    try:
        return Design.parse(s).spec
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _threads(s: str) -> int:
    from cnnlab.config import setting_range

    return in_range(setting_range("threads"))(s)  # TrainConfig.threads: what a run records


def _even_depth(s: str) -> int:
    from cnnlab.analysis.depth import DEPTHS

    v = in_range(DEPTHS)(s)
    if v % 2:
        raise argparse.ArgumentTypeError(f"a depth counts convs in blocks of two, so it must be even, got {v}")
    return v


def _parsed(s: str, parse, what: str):
    try:
        return parse(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
