"""cnnlab serve: the web page to draw on, look inside the networks and train them, and its JSON API."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from cnnlab.cli.args import UsageError, add_device, port, use_device

if TYPE_CHECKING:
    from cnnlab.serve.models import ServedModel

HELP = "a web page to draw on, look inside the networks and train them, and a JSON API"
EPILOG = ("examples:\n  cnnlab serve                                   # the best finished run of each model under runs/\n"
          "  cnnlab serve runs/*-resnet runs/*-inception_net --port 8000")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", default=[], metavar="RUN",
                   help="run directories or checkpoint files to serve (default: the finished run of each model under "
                   "--runs-root with the best validation accuracy, the newest of equals; none there: the page opens "
                   "ready to train one)")
    p.add_argument("--runs-root", default="runs", help="where runs are looked for, and trainings from the page go (default: runs)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 opens it to your network (default: 127.0.0.1)")
    p.add_argument("--port", type=port, default=8000, help="port (default: 8000)")
    p.add_argument("--allow-host", action="append", default=[], type=_host_name, metavar="NAME",
                   help="another name this server is reached by, as the browser's address bar has it (repeatable): "
                   "requests naming any other host are refused, which keeps other sites out through DNS rebinding "
                   "(default: only --host, and 127.0.0.1, localhost and [::1] when it is loopback or 0.0.0.0)")
    p.add_argument("--no-training", dest="training", action="store_false",
                   help="refuse trainings from the page (default: allowed)")
    add_device(p, "cpu", threads=1)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401

        from cnnlab.serve.app import create_app
        from cnnlab.serve.server import exposure_warning, run as run_server
    except ImportError as e:
        raise UsageError(f"serving needs FastAPI and uvicorn ({e.name} is missing): pip install fastapi uvicorn") from None

    # --threads defaults to 1 here: one image is tiny, so parallelism comes from concurrent requests
    app = create_app(args.runs, args.runs_root, training=args.training, device=use_device(args), host=args.host,
                     allow_hosts=args.allow_host)  # bad runs fail here
    for line in app.state.skipped:
        print(f"cnnlab serve: skipped {line}", file=sys.stderr)
    for line in chosen_lines(app.state.shelf.served()):
        print(f"cnnlab serve: {line}")
    served = [m["id"] for m in app.state.shelf.describe()]
    what = ", ".join(served) if served else f"no model yet (none finished under {args.runs_root}/): train one on the page"
    print(f"cnnlab serve: {what} at http://{args.host}:{args.port}/ (Ctrl-C stops)")
    warning = exposure_warning(args.host)
    if warning:
        print(f"cnnlab serve: {warning}", file=sys.stderr)
    run_server(app, args.host, args.port)
    return 0


def chosen_lines(served: list[ServedModel]) -> list[str]:
    """One line for each model chosen from the runs folder: the run it serves and why, and a newer run it passed
    over ("resnet on mnist: runs/20261206-2110-resnet (best validation accuracy 99.57% of 3 finished runs)")."""
    lines = []
    for model in served:
        chosen = model.chosen
        if chosen is None:
            continue
        run = chosen.run
        lines.append(f"{run.network} on {run.dataset}: {run.path} ({chosen.why})")
        if chosen.newer is not None:
            newer = chosen.newer
            val = f"validation accuracy {100 * newer.val_acc:.2f}%" if newer.val_acc is not None else "no validation accuracy"
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(newer.finished))
            lines.append(f"{run.network} on {run.dataset}: not serving the newer {newer.path} ({val}, finished {when})")
    return lines


def _host_name(s: str) -> str:
    """An --allow-host name: a host name or address, without a port (any port is accepted)."""
    from cnnlab.serve.server import split_host

    split = split_host(s)
    if split is None or split[1] is not None:
        raise argparse.ArgumentTypeError(f"expected a host name or address without a port (any port is accepted), got {s!r}")
    return split[0]
