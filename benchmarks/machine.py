"""Shared by the benchmarks: the machine line (from cnnlab.sysinfo), writing results whole, and one run that may
fail without ending the benchmark (attempt, ProcessFailed, failure_of)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, TypeVar

from cnnlab.atomic import atomic_writer
from cnnlab.sysinfo import cpu_kind, describe_machine  # noqa: F401  (the benchmarks import them from here)

T = TypeVar("T")

# The learning rate of every timed training step (throughput, not accuracy): at the recipe's rate a model without
# batch norm can diverge part-way (inception_net at lr 0.05 raised NonFiniteLoss at step 38 of speed.py's
# throughput run), and a step takes the same time at any rate, so the timing runs take one that cannot diverge.
TIMING_LR = 1e-4


def timing_lr_note(lr: float = TIMING_LR) -> str:
    """The tables' words for it (with the lr a results file recorded)."""
    return f"steps timed at lr {lr:g} so that no setting can diverge; a step costs the same at any lr"

_REASON_CHARS = 400  # a failure's reason is one line of a table's note: long enough for NonFiniteLoss's message


def write_file(path: str | Path, text: str) -> None:
    """Write a results file whole or not at all (an interrupted benchmark never leaves half a file)."""
    with atomic_writer(path, "w", perms=0o644) as f:
        f.write(text)


def write_json(path: str | Path, obj) -> None:
    write_file(path, json.dumps(obj, indent=1) + "\n")


def write_results(out_dir: str | Path, name: str, results: dict, markdown: str) -> None:
    """Write NAME.json (every figure) and NAME.md (the report) to out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", results)
    write_file(out / f"{name}.md", markdown)
    print(markdown)


# ---- one run that may fail ---------------------------------------------------------------------------------


# A line that reads as an error: "Name: message" from its first column, as Python's last traceback line
# ("cnnlab.train.loop.NonFiniteLoss: the training loss ...") and cnnlab's ("cnnlab train: error: ...") are. torchrun ends
# its stderr with a report box (indented fields, rules of "=") after its workers' tracebacks, so the last line alone
# would say nothing. A worker's line may carry a "[rank0]:" prefix (torchrun --tee).
_ERROR_LINE = re.compile(r"^(?:\[[\w-]+\]:\s?)?(?:[A-Za-z_][\w.]*|cnnlab [\w-]+): \S")


class ProcessFailed(RuntimeError):
    """A process a benchmark started exited non-zero. str(): what it was, its exit status and its last stderr line
    that reads as an error (else its last stderr line)."""

    def __init__(self, what: str, returncode: int, stderr: str | bytes | None) -> None:
        if isinstance(stderr, bytes):
            stderr = stderr.decode(errors="replace")
        lines = [ln.rstrip() for ln in (stderr or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if _ERROR_LINE.match(ln)]
        last = (errors or lines or [""])[-1].strip()
        super().__init__(what, returncode, last)
        self.what, self.returncode, self.last_line = what, returncode, last

    def __str__(self) -> str:
        return f"{self.what} exited with status {self.returncode}: {self.last_line or '(nothing on stderr)'}"


def failure_reason(exc: BaseException) -> str:
    """One line for a table: the exception's type and message. A message of several lines keeps its first line and
    its last (a subprocess's error usually ends its stderr); a long one is cut in the middle."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    message = " ... ".join([lines[0], lines[-1]] if len(lines) > 1 else lines)
    reason = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if len(reason) > _REASON_CHARS:
        half = (_REASON_CHARS - 5) // 2
        reason = f"{reason[:half]} ... {reason[-half:]}"
    return reason


def attempt(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T | None, str | None]:
    """Call fn(*args, **kwargs) as one run of a benchmark: (its result, None), or (None, the reason) when it raised
    an Exception, so that the benchmark records the run as failed and goes on with the next.

    The reason is one line (failure_reason): e.g. "NonFiniteLoss: the training loss stopped being a finite number at
    step 38 (epoch 1); ...", or for a process, "ProcessFailed: cnnlab train exited with status 1: <its last stderr
    line>". KeyboardInterrupt and SystemExit are not Exceptions and pass through: Ctrl-C still ends the benchmark.
    Prints nothing; the caller reports the run either way.
    """
    try:
        return fn(*args, **kwargs), None
    except Exception as e:  # noqa: BLE001  (any failure of one run is that run's, recorded with its reason)
        return None, failure_reason(e)


def failure_of(record: Any) -> str | None:
    """The reason a recorded run failed ({"failed": reason, ...}), or None for a finished one, including every
    record written before failures were recorded (they have no "failed" field: only finished runs were kept)."""
    return record.get("failed") if isinstance(record, dict) else None


def count_with_failures(total: int, failed: int) -> str:
    """A table's runs cell: "3", or "3 (1 failed)"."""
    return f"{total} ({failed} failed)" if failed else str(total)
