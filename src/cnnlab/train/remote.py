"""A run ordered and watched by another process: the web page's training panel (serve/training.py) starts

    python -m cnnlab.train.remote

writes one JSON line, the order {"model", "budget", "dataset", "runs_root", "threads", "device"}, and reads JSON
lines back, one an event: {"event": "started"|"step"|"epoch"|"finished"|"error", ...}. Writing "stop" (a line), or
closing the pipe (the server went away), asks the run to stop: it ends at the next log step as an ordinary
finished run, with what was trained kept (train/events.py).

A process of its own, so the server keeps answering while this one trains, and a crash here is only a failed
training there. It sends only run directory names, never paths: the server passes events on to browsers.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from cnnlab.train.events import Observer

LOG_EVERY = 10  # steps between step events: a smooth loss curve on the page, one host sync each


class RemoteObserver(Observer):
    """Sends a run's events as JSON lines to `out`, and stops the run once `stop` is set."""

    def __init__(self, out: IO[str], stop: threading.Event) -> None:
        self.out, self.stop, self.t0 = out, stop, time.perf_counter()

    def send(self, event: str, **data: Any) -> None:
        data = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}
        self.out.write(json.dumps({"event": event, **data}) + "\n")
        self.out.flush()

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.t0, 2)

    def started(self, run_dir: Path, config: dict[str, Any], total_steps: int, steps_per_epoch: int) -> None:
        self.send("started", run=Path(run_dir).name, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                  elapsed=self.elapsed())

    def step(self, step: int, total_steps: int, epoch: int, loss: float) -> None:
        self.send("step", step=step, total_steps=total_steps, epoch=epoch, loss=float(loss), elapsed=self.elapsed())

    def epoch(self, row: dict[str, Any]) -> None:
        self.send("epoch", epoch=row.get("epoch"), steps=row.get("steps"), train_loss=row.get("train_loss"),
                  val_acc=row.get("val_acc"), test_acc=row.get("test_acc"), elapsed=self.elapsed())

    def should_stop(self) -> bool:
        return self.stop.is_set()


def _listen(stop: threading.Event) -> None:
    """Set `stop` on a "stop" line or when stdin closes (the server is gone: keep what was trained)."""
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    stop.set()


def main() -> int:
    # The events go to the real stdout; anything else that prints (a library's warning) goes to stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    stop = threading.Event()
    try:
        order = json.loads(sys.stdin.readline())
        threading.Thread(target=_listen, args=(stop,), daemon=True).start()
        from cnnlab.train import fit, make_config

        observer = RemoteObserver(out, stop)
        cfg = make_config(order["model"], dataset=order.get("dataset", "mnist"), time_budget=float(order["budget"]),
                          device=order.get("device", "auto"), threads=int(order.get("threads", 1)), log_every=LOG_EVERY)
        result = fit(cfg, out_root=order["runs_root"], progress=False, observers=[observer])
        observer.send("finished", run=Path(result.run_dir).name, test_acc=result.test_acc, stopped=stop.is_set(),
                      elapsed=observer.elapsed())
        return 0
    except Exception as e:  # one line for the page; the details stay on this process's stderr
        import traceback

        traceback.print_exc()
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        out.write(json.dumps({"event": "error", "message": message[:300]}) + "\n")
        out.flush()
        return 1


if __name__ == "__main__":
    sys.exit(main())
