"""Training in separate processes: alone, under torchrun, and killed at a chosen moment, with none outliving its
test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

WORKER = Path(__file__).resolve().parents[1] / "train" / "ddp_worker.py"  # trains through the library (fit or resume)


class Procs:
    """Starts cnnlab training processes for a test and makes sure none outlives it."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def command(self, nproc: int, argv: list[str], module: bool = False) -> list[str]:
        """The worker script (or `-m cnnlab` with module=True), alone or under torchrun with nproc processes."""
        target = ["-m", "cnnlab", *argv] if module else [str(WORKER), *argv]
        if nproc == 1:
            return [sys.executable, *target]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *target]

    def start(self, cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None,
              stdout=None, stderr=None) -> subprocess.Popen:
        """stdout and stderr, when given (a pty's end, say), replace the log or the pipes."""
        out = open(log, "w") if log else subprocess.PIPE
        p = subprocess.Popen(
            cmd, stdout=out if stdout is None else stdout, stderr=(subprocess.STDOUT if log else subprocess.PIPE) if stderr is None else stderr,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, start_new_session=True,
        )
        self.started.append(p)
        return p

    def run(self, cmd: list[str], timeout: float = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        p = self.start(cmd, env)
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, f"{cmd} exited {p.returncode}:\n{out[-2000:]}\n{err[-3000:]}"
        return subprocess.CompletedProcess(cmd, p.returncode, out, err)

    def kill_when(self, p: subprocess.Popen, ready, timeout: float = 120, poll: float = 0.005,
                  may_end: bool = False) -> bool:
        """SIGKILL the process and all its children the moment ready() is true; True once killed.

        A process that ends on its own first fails the test, or, with may_end=True, returns False.
        """
        end = time.monotonic() + timeout
        while not ready():
            if p.poll() is not None:
                assert may_end, "the process ended before the moment to kill it"
                return False
            assert time.monotonic() < end, "the moment to kill never came"
            time.sleep(poll)
        kill_tree(p)
        return True

    @staticmethod
    def descendants(pid: int) -> list[int]:
        return descendants(pid)

    def close(self) -> None:
        for p in self.started:
            kill_tree(p)


def descendants(pid: int) -> list[int]:
    """Every process below pid (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(p: subprocess.Popen) -> None:
    """SIGKILL a process and everything it started, at once."""
    for pid in [p.pid, *descendants(p.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait(timeout=30)


def stop(p: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM a process and wait for it; SIGKILL it if it has not ended within `grace` seconds."""
    p.terminate()
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


@contextlib.contextmanager
def cnnlab_serve(args: list[str], timeout: float = 60) -> Iterator[str]:
    """`cnnlab serve ARGS` in a process of its own, until it prints the line that says where it serves: what it
    printed by then (stdout and stderr), for the block; stopped after it."""
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        end = time.monotonic() + timeout
        while not any(" at http://" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < end, "".join(lines)[-2000:]
            time.sleep(0.1)
        yield "".join(lines)
    finally:
        stop(proc)
