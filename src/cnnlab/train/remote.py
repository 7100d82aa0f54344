"""A run ordered and watched by another process: the web page's training panel (serve/training.py) starts

    python -m cnnlab.train.remote

writes one JSON line, the order {"model", "block", "budget", "dataset", "runs_root", "threads", "device"} ("block": a
design, for a model that takes one; optional), and reads JSON
lines back, one an event: {"event": "started"|"step"|"epoch"|"finished"|"error", ...}. Writing "stop" (a line), or
closing the pipe (the server went away), asks the run to stop: it ends at the next log step as an ordinary
finished run, with what was trained kept (train/events.py).

A server that dies without stopping it first (SIGKILL, a closed terminal) leaves this process with pipes nobody
reads: stdin ends, which is a stop, and a write to stdout or stderr would fail with EPIPE. So once the reader is
known gone (a failed event write, or stdin's end with no reader on stdout), all this process writes goes to the
null device, and the run ends at its next log step exactly as a stop from the page ends it: the epoch in progress
evaluated as the last, summary.json written, served by the next server on these runs.

A process of its own, so the server keeps answering while this one trains, and a crash here is only a failed
training there. It sends only run directory names, never paths: the server passes events on to browsers.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from cnnlab.train.events import Observer

LOG_EVERY = 10  # steps between step events: a smooth loss curve on the page, one host sync each


def _reader_gone(out: IO[str]) -> bool:
    """True when nobody can read `out` any more (a pipe whose read end closed: poll reports POLLERR on it)."""
    if not hasattr(select, "poll"):
        return False
    try:
        poller = select.poll()
        poller.register(out.fileno(), 0)  # POLLERR and POLLHUP are reported whatever was asked for
        return any(mask & select.POLLERR for _, mask in poller.poll(0))
    except (OSError, ValueError):
        return False


class RemoteObserver(Observer):
    """Sends a run's events as JSON lines to `out`, and stops the run once `stop` is set, or once nobody reads
    `out` any more (the server died: what was trained is kept as a page stop keeps it)."""

    def __init__(self, out: IO[str], stop: threading.Event) -> None:
        self.out, self.stop, self.t0 = out, stop, time.perf_counter()
        self.gone = False  # the server is gone: nothing more is sent, and the run stops
        self._silencing = threading.Lock()

    def send(self, event: str, **data: Any) -> None:
        if self.gone:
            return
        data = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}
        try:
            self.out.write(json.dumps({"event": event, **data}) + "\n")
            self.out.flush()
        except (OSError, ValueError):  # EPIPE: the reader died; ValueError: the stream is closed
            self.server_gone()

    def server_gone(self) -> None:
        """Stop the run, and send everything this process writes (events, prints, warnings, a traceback, the
        flush at exit) to the null device, so that no write to a dead pipe raises or ends the process."""
        with self._silencing:
            if self.gone:
                return
            self.gone = True
            self.stop.set()
            # Descriptors, not the Python streams: another thread may be writing, and what a stream still holds
            # is flushed into the null device later.
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                for fd in {self.out.fileno(), 1, 2}:
                    os.dup2(null, fd)
            finally:
                os.close(null)

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.t0, 2)

    def started(self, run_dir: Path, config: dict[str, Any], total_steps: int, steps_per_epoch: int) -> None:
        self.send("started", run=Path(run_dir).name, block=config.get("block", ""), total_steps=total_steps,
                  steps_per_epoch=steps_per_epoch, elapsed=self.elapsed())

    def step(self, step: int, total_steps: int, epoch: int, loss: float) -> None:
        self.send("step", step=step, total_steps=total_steps, epoch=epoch, loss=float(loss), elapsed=self.elapsed())

    def epoch(self, row: dict[str, Any]) -> None:
        self.send("epoch", epoch=row.get("epoch"), steps=row.get("steps"), train_loss=row.get("train_loss"),
                  val_acc=row.get("val_acc"), test_acc=row.get("test_acc"), elapsed=self.elapsed())

    def should_stop(self) -> bool:
        return self.stop.is_set()


def _listen(observer: RemoteObserver) -> None:
    """Set the stop on a "stop" line or when stdin closes (the server is gone: keep what was trained). A closed
    stdin with no reader on stdout is a dead server: its pipes are let go at once, before anything writes to them."""
    try:
        for line in sys.stdin:
            if line.strip() == "stop":
                observer.stop.set()  # and read on: the server may still die while the run finishes
    except (OSError, ValueError):  # stdin broke: as good as closed
        pass
    observer.stop.set()
    if _reader_gone(observer.out):
        observer.server_gone()


def main() -> int:
    if hasattr(signal, "SIGPIPE"):  # a write to a dead server's pipe is an EPIPE to handle, never a killing signal
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    # The events go to the real stdout; anything else that prints (a library's warning) goes to stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    stop = threading.Event()
    observer = RemoteObserver(out, stop)
    try:
        order = json.loads(sys.stdin.readline())
        threading.Thread(target=_listen, args=(observer,), daemon=True).start()
        from cnnlab.config import make_spec
        from cnnlab.train import fit

        spec = make_spec(order["model"], dataset=order.get("dataset", "mnist"), block=order.get("block") or None,
                         time_budget=float(order["budget"]), device=order.get("device", "auto"),
                         threads=int(order.get("threads", 1)), log_every=LOG_EVERY)
        result = fit(spec, out_root=order["runs_root"], progress=False, observers=[observer])
        observer.send("finished", run=Path(result.run_dir).name, test_acc=result.test_acc, stopped=stop.is_set(),
                      elapsed=observer.elapsed())
        return 0
    except Exception as e:  # one line for the page; the details stay on this process's stderr
        import traceback

        try:
            traceback.print_exc()
        except OSError:  # stderr's reader died too
            observer.server_gone()
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        observer.send("error", message=message[:300])
        return 1


if __name__ == "__main__":
    sys.exit(main())
