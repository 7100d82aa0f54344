"""Training from the page: one run at a time, in a process of its own (`python -m cnnlab.train.remote`), so the
server keeps answering while it trains; its events are kept and passed on to any number of watchers.

The child gets the cores but one (the server keeps one to answer), is asked to stop through its stdin (it then
finishes as an ordinary run with what was trained), and starts in a session of its own, so a Ctrl-C in the
server's terminal reaches the server alone, which then stops the child itself. A server that dies without
stopping it (SIGKILL, a closed terminal) closes the child's pipes, which the child takes as the same stop: it ends
its epoch in progress as a stopped run, which the next server on these runs serves (train/remote.py). Its run
directory goes under the server's runs folder; when it finishes, the server loads and serves it before telling
anyone it is done.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from cnnlab.serve.inputs import RequestError, coded

BUDGET = (15, 300)  # seconds a training from the page may take: long enough to learn, short enough to watch
TERMINAL = ("done", "error")
STOP_GRACE = 20.0  # seconds the server's shutdown waits for a stopped child to evaluate and write what it trained


class TrainingRefused(RequestError):
    """A training order that cannot be followed now; `status` is the HTTP status (409: busy or nothing to stop)."""


@dataclass
class Job:
    id: int
    model: str
    budget: float
    dataset: str
    block: str = ""  # the design of a model that takes one (its canonical spec), else ""
    t0: float = field(default_factory=time.monotonic)
    state: str = "starting"  # starting | running | finished | stopped | failed
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    run: str | None = None  # its run directory's name, once made
    process: subprocess.Popen | None = None
    stop_asked: bool = False
    t_end: float | None = None  # when it ended

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running")

    def elapsed(self) -> float:
        return round((self.t_end or time.monotonic()) - self.t0, 1)


class Trainer:
    """Starts, stops and watches trainings. `serve(run_dir) -> model id` is called, in a reader thread, with each
    finished run; what it raises makes the job fail with its message."""

    def __init__(self, runs_root: str | Path, serve: Callable[[Path], str], threads: int | None = None) -> None:
        self.runs_root = Path(runs_root).absolute()
        self.serve = serve
        self.threads = threads or max(1, (os.cpu_count() or 2) - 1)
        self.job: Job | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Future] = set()  # one per follower waiting for news; touched in the loop's thread
        self._jobs = 0

    # ---- orders ----------------------------------------------------------------------------------------------

    def start(self, model: str, budget: float, dataset: str, block: str = "") -> Job:
        """Start a training of `model` (with the block design `block`, for a model that takes one; checked by the
        order's reader) (TrainingRefused 409 while one runs). Called from the event loop."""
        self._loop = asyncio.get_running_loop()
        with self._lock:
            if self.job is not None and self.job.active:
                j = self.job
                raise TrainingRefused(409, f"a training is already running ({j.model}, {j.elapsed():.0f} s of "
                                           f"{j.budget:.0f} s): wait for it or stop it", "training.busy",
                                      model=j.model, elapsed=f"{j.elapsed():.0f}", budget=f"{j.budget:.0f}")
            self._jobs += 1
            job = self.job = Job(self._jobs, model, budget, dataset, block)
        order = {"model": model, "block": block, "budget": budget, "dataset": dataset, "runs_root": str(self.runs_root),
                 "threads": self.threads, "device": "auto"}
        try:
            job.process = subprocess.Popen(
                [sys.executable, "-m", "cnnlab.train.remote"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", start_new_session=True,
                env={**os.environ, "OMP_NUM_THREADS": str(self.threads)},
            )
            job.process.stdin.write(json.dumps(order) + "\n")
            job.process.stdin.flush()
        except OSError as e:
            job.state, job.t_end = "failed", time.monotonic()
            reason = str(e.strerror or e)
            self._emit(job, "error", {"message": f"the training process could not start ({reason})",
                                      **coded("training.no_start", reason=reason)})
            return job
        self._emit(job, "status", self.status(job))
        stderr_tail: deque[str] = deque(maxlen=20)
        threading.Thread(target=self._drain, args=(job.process.stderr, stderr_tail), daemon=True).start()
        threading.Thread(target=self._follow, args=(job, stderr_tail), daemon=True).start()
        return job

    def stop(self) -> Job:
        """Ask the running training to stop, keeping what it trained (TrainingRefused 409 when none runs)."""
        with self._lock:
            job = self.job
            if job is None or not job.active or job.process is None:
                raise TrainingRefused(409, "no training is running", "training.idle")
            job.stop_asked = True
        self._ask_to_stop(job)
        return job

    def close(self, grace: float = STOP_GRACE) -> None:
        """Server shutdown: ask a running child to stop, and wait up to `grace` seconds for it to finish. One still
        evaluating or writing then (a large model on a slow CPU) is left to finish on its own, never killed: in a
        session of its own, it ends as a page stop ends it once this process and its pipes are gone, keeping what
        it trained for the next server to serve."""
        job = self.job
        if job is None or job.process is None or job.process.poll() is not None:
            return
        self._ask_to_stop(job)
        try:
            job.process.wait(grace)
        except subprocess.TimeoutExpired:
            pass

    @staticmethod
    def _ask_to_stop(job: Job) -> None:
        try:
            job.process.stdin.write("stop\n")
            job.process.stdin.flush()
        except (OSError, ValueError):  # it has just ended, or its pipe is already closed
            pass

    # ---- what is known -------------------------------------------------------------------------------------

    def status(self, job: Job | None = None) -> dict[str, Any]:
        job = job or self.job
        if job is None:
            return {"state": "idle", "model": None, "budget": None, "elapsed": 0}
        return {"state": job.state, "model": job.model, "budget": job.budget, "elapsed": job.elapsed()}

    def snapshot(self) -> dict[str, Any]:
        job = self.job
        events = [{"event": name, **data} for name, data in list(job.events)] if job else []
        return {**self.status(job), "events": events}

    async def follow(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The current (or last) job's events so far, then its new ones as they come, ending after `done` or
        `error`. With no job ever, one `status` event."""
        self._loop = asyncio.get_running_loop()
        job = self.job
        if job is None:
            yield "status", self.status()
            return
        i = 0
        while True:
            waiter = self._waiter()  # made before looking, so that an event appended meanwhile still wakes it
            try:
                while i < len(job.events):
                    name, data = job.events[i]
                    i += 1
                    yield name, data
                    if name in TERMINAL:
                        return
                await waiter
            finally:
                self._waiters.discard(waiter)

    def _waiter(self) -> asyncio.Future:
        """A wake-up for one follower alone: a follower that leaves cancels its own, and a future shared by all
        would be cancelled for every one of them."""
        waiter = self._loop.create_future()
        self._waiters.add(waiter)
        return waiter

    # ---- the reader threads -----------------------------------------------------------------------------------

    def _emit(self, job: Job, name: str, data: dict[str, Any]) -> None:
        job.events.append((name, data))  # list.append is atomic: readers see whole events
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._wake_all)
            except RuntimeError:  # the loop closed meanwhile (server shutdown)
                pass

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    @staticmethod
    def _drain(stream, tail: deque) -> None:
        for line in stream:
            if line.strip():
                tail.append(line.rstrip())

    def _follow(self, job: Job, stderr_tail: deque) -> None:
        """Pass the child's events on until it ends; then serve its run, or say why it failed."""
        finished = failed = None  # failed: the page's `error` event, {"message": an English line, "code", "params"}
        for line in job.process.stdout:
            try:
                event = json.loads(line)
                name = event.pop("event")
            except (ValueError, KeyError, AttributeError):
                continue  # not one of ours
            if name == "started":
                job.run, job.state = event.get("run"), "running"
                self._emit(job, "status", self.status(job))
                self._emit(job, "started", event)
            elif name in ("step", "epoch"):
                self._emit(job, name, event)
            elif name == "finished":
                finished = event
            elif name == "error":
                said = self._no_paths(str(event.get("message", "")))
                failed = {"message": said, **coded("training.failed", reason=said)}
        code = job.process.wait()
        job.t_end = time.monotonic()
        if finished is None and failed is None:
            last = self._no_paths(stderr_tail[-1]) if stderr_tail else ""
            if code < 0:
                failed = {"message": f"the training process was killed (signal {-code})",
                          **coded("training.killed", signal=-code)}
            elif last:
                failed = {"message": f"the training process ended with code {code}: {last}",
                          **coded("training.exit_said", code=code, reason=last)}
            else:
                failed = {"message": f"the training process ended with code {code}", **coded("training.exit", code=code)}
        if finished is not None:
            try:
                model_id = self.serve(self.runs_root / str(finished.get("run")))
            except Exception as e:  # a run that cannot be loaded is a failed training, not a failed server
                reason = self._no_paths(str(e))
                failed = {"message": f"the trained run could not be served ({reason})",
                          **coded("training.unservable", reason=reason)}
            else:
                job.state = "stopped" if finished.get("stopped") else "finished"
                self._emit(job, "status", self.status(job))
                self._emit(job, "done", {"model": model_id, "test_accuracy": finished.get("test_acc"),
                                         "stopped": bool(finished.get("stopped"))})
                return
        job.state = "failed"
        self._emit(job, "status", self.status(job))
        self._emit(job, "error", failed)

    def _no_paths(self, message: str) -> str:
        """A message for the page, without the server's own folders in it: the runs folder by its name, and any
        other absolute path (a data set's, a library's) by its last part."""
        message = message.replace(str(self.runs_root), self.runs_root.name)
        return _ABSOLUTE_PATH.sub(lambda m: m.group(1) + m.group(2).rsplit("/", 1)[-1], message)


# An absolute path in a message: a "/" that starts a word, then what a path holds up to a space, quote or bracket.
_ABSOLUTE_PATH = re.compile(r"(^|[\s'\"(\[=:])(/[^\s'\"()\[\],;]+)")
