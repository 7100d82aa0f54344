"""The CPU threads of a training run beside other programs: kept as they are by default, so that a seeded run
repeats to the digit, or, with --adapt-threads, fitted to the cores other programs leave free as the run goes.

PyTorch splits each operator of a step over its threads and waits for the last one. When another program holds a
core, the thread that shares it gets that core only in turns of a few milliseconds, so every operator waits for
it: on the 2-core AMD EPYC of benchmarks/results, one busy core made resnet's step 3-4x slower with 2 threads,
while 1 thread ran at its idle speed (the other core was still free). An adapting run watches, through /proc/stat,
how many of its cores other programs keep busy (the machine's busy time less its own), and uses the cores they
leave: checked before the first step and then about every second, and changed back when they go quiet.

That speed has a price: the thread count changes how every sum is split, so the last bits of the weights, and after
a few epochs the fourth digit of an accuracy, follow the other programs' load. A run keeps its threads unless asked
(--adapt-threads), and an adapting run records the counts it used (`ThreadChooser.used`, summary.json's `threads`).
Either way a run says, once, when other programs slow its steps, and what to do about it.

The threads' wait policy was measured too and left as it is: beside one busy core, a resnet step with 2 threads
took 39-55 ms with OpenMP's default (spinning), 45-50 ms with OMP_WAIT_POLICY=passive and 55-57 ms with
GOMP_SPINCOUNT=1000, against 22 ms with 1 thread (13.6 ms with 2 threads on the idle machine). On the 2-core Intel
Xeon (family 6, model 167) of benchmarks/results/busy, spinning cost far more: 128-241 ms with 2 threads beside a
busy core (9-10 ms idle), 46-48 ms with GOMP_SPINCOUNT=10000 (as fast idle for resnet, 5-8% slower for basic_cnn and
inception_net), 17 ms with 1 thread. The spin count changes no digit, and the `cnnlab` command sets 10,000 unless
the user set one (cli.GOMP_SPINCOUNT: whole runs measured there).

On systems without /proc (macOS, Windows) nothing is measured and the threads stay as they are.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import torch

from cnnlab.train.loop import EpochPosition, StepHook

from cnnlab.device import PYTORCH_THREADS

_CHECK_SECONDS = 1.0  # how often the load is measured: long enough for /proc's 10 ms ticks to average out
_FIRST_CHECK_SECONDS = 0.25  # until the first decision: sooner (a window from the set-up to the first step counts)
_BUSY_DOWN, _BUSY_UP = 0.6, 0.4  # a core counts as taken above 0.6 busy, as free again below 0.4 (hysteresis)
_SLOW = 2.5  # steps this many times slower than the run's fastest are said to be slow (once a run: the rate of a
# crowded machine swings, and one line says what to do)
_ADAPT = ("--adapt-threads trains on the cores they leave free (the same seed then gives digits that depend on "
          "their load)")


@dataclass(frozen=True)
class CpuTimes:
    """Busy ticks of the cores this process may run on, all their ticks, this process's own ticks (all threads)."""

    busy: int
    total: int
    own: int


def read_cpu_times(cores: frozenset[int] | None = None) -> CpuTimes | None:
    """Counters from /proc/stat (the cores in `cores`, or all) and /proc/self/stat; None where there is no /proc."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
        with open("/proc/self/stat") as f:
            own_fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    busy = total = 0
    niced = _niced()
    for line in lines:
        name, *values = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit()) or (cores is not None and int(name[3:]) not in cores):
            continue
        ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(ticks)
        # Steal counts as busy (another machine took the core); niced time does not, unless this process is niced
        # itself: a nice 19 program gets a sliver of a core beside ours, so no step waits for it.
        busy += sum(ticks) - ticks[3] - ticks[4] - (0 if niced else ticks[1])
    return CpuTimes(busy, total, int(own_fields[11]) + int(own_fields[12]))  # utime + stime


def others_busy(before: CpuTimes, after: CpuTimes, cores: int) -> float:
    """Cores' worth of time that other programs kept busy between two readings."""
    total = after.total - before.total
    if total <= 0:
        return 0.0
    others = (after.busy - before.busy) - (after.own - before.own)
    return max(0.0, min(float(cores), cores * others / total))


class ThreadChooser(StepHook):
    """Watches the cores other programs keep busy; sets PyTorch's threads to the cores they leave free when `adapt`,
    and tells (`say`) when steps slow down.

    Call `start()` when the run begins, `begin_epoch()` before each epoch's steps and `step()` after each step.
    `adapt`: fit the threads, up to `max_threads` (the run's --threads, or PyTorch's own count, PYTORCH_THREADS);
    otherwise the count set before (runtime.configure) is kept. `used`: the thread counts the run trained on, in
    order (one, unless it adapted).
    """

    def __init__(self, adapt: bool, say: Callable[[str], None], max_threads: int | None = None,
                 read: Callable[[], CpuTimes | None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.adapt = adapt
        self.max_threads = max_threads or PYTORCH_THREADS
        if self.adapt and torch.get_num_threads() != self.max_threads:
            torch.set_num_threads(self.max_threads)
        self.cores = _usable_cores()
        self._read = read or (lambda: read_cpu_times(self.cores))
        self.n_cores = len(self.cores) if self.cores else (os.cpu_count() or 1)
        self.say, self.clock = say, clock
        self.threads = torch.get_num_threads()
        self.used = [self.threads]
        self.busy: float | None = None  # cores other programs kept busy in the last window
        self.fastest: float | None = None  # the best steps per second of any window
        self.slow_said = False  # said once a run
        self.crowded_said = False  # threads kept: said once that they outnumber the free cores
        self._window: tuple[float, CpuTimes | None, int] | None = None
        self._steps = 0
        self._decided = False

    def start(self) -> None:
        self._window = (self.clock(), self._read(), 0)

    def epoch_started(self, epoch: int, position: EpochPosition) -> None:  # the run's step hook
        self.begin_epoch()

    def after_step(self, steps: int) -> None:
        self.step()

    def begin_epoch(self) -> None:
        """A new window: the evaluation between epochs is not a step."""
        if self._decided:
            self._window = (self.clock(), self._read(), self._steps)
        else:  # the first decision waits for the first step, so the set-up's window counts
            self.step(first=True)

    def step(self, first: bool = False) -> None:
        if self._window is None:
            self.start()
            return
        if not first:
            self._steps += 1
        t0, before, steps0 = self._window
        now = self.clock()
        if now - t0 < (_FIRST_CHECK_SECONDS if not self._decided else _CHECK_SECONDS):
            return
        after = self._read()
        self._window = (now, after, self._steps)
        if before is not None and after is not None:
            self.busy = others_busy(before, after, self.n_cores)
            if self.adapt:
                self._choose(self.busy)
            elif not self.crowded_said and self.threads > self.n_cores - _whole(self.busy, _BUSY_DOWN):
                self.crowded_said = True
                self.say(f"other programs are keeping {self.busy:.1f} of the {self.n_cores} cores busy, and each of this "
                         f"run's {self.threads} threads waits for them at every step: {_ADAPT}")
        if self._decided and self._steps > steps0:
            self._pace((self._steps - steps0) / (now - t0))
        self._decided = True

    def _choose(self, busy: float) -> None:
        # Hysteresis: fewer threads once others clearly hold a core (0.6 of it), more once it is clearly free (0.4).
        fewest = self.n_cores - _whole(busy, _BUSY_DOWN)
        most = self.n_cores - _whole(busy, _BUSY_UP)
        want = min(max(self.threads, most), fewest)
        want = max(1, min(self.max_threads, want))
        if want == self.threads:
            return
        torch.set_num_threads(want)
        self.threads = want
        self.used.append(want)
        if want < self.max_threads:
            self.say(f"other programs are keeping {busy:.1f} of the {self.n_cores} cores busy: training on "
                     f"{want} thread{'s' if want > 1 else ''}, so that no step waits for a busy core")
        else:
            self.say(f"the cores are free again: training on {want} threads")

    def _pace(self, rate: float) -> None:
        if self.fastest is None or rate > self.fastest:
            self.fastest = rate
        slower = self.fastest / rate
        if slower >= _SLOW and not self.slow_said:
            self.slow_said = True
            busy = f"other programs are keeping {self.busy:.1f} of the {self.n_cores} cores busy" if self.busy is not None else "the machine is busier"
            advice = "close them to train at full speed" if self.adapt else _ADAPT
            self.say(f"steps are running {slower:.1f}x slower than at the fastest in this run ({busy}); {advice}")


def _whole(busy: float, threshold: float) -> int:
    """Cores counted as taken by others: a core's fraction counts from `threshold` on."""
    return int(busy) + (1 if busy - int(busy) >= threshold else 0)


def _niced() -> bool:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0) > 0
    except (AttributeError, OSError):
        return False


def _usable_cores() -> frozenset[int] | None:
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
