"""The CPU threads a run uses beside other programs (train/cores.py): kept by default, or with --adapt-threads
measured from /proc and chosen with hysteresis; said once when steps slow down. The /proc readings are faked where a test needs a given load (they come from
outside the project); one test measures a real busy process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from cnnlab.train import cores
from cnnlab.train.cores import CpuTimes, ThreadChooser, others_busy, read_cpu_times


@pytest.fixture(autouse=True)
def _keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class FakeMachine:
    """A 2-core machine's counters: each `advance` is one second (100 ticks a core) with `others` cores busy
    with other programs and `ours` cores of this process."""

    def __init__(self) -> None:
        self.t = 0.0
        self.times = CpuTimes(0, 0, 0)

    def clock(self) -> float:
        return self.t

    def read(self) -> CpuTimes:
        return self.times

    def advance(self, others: float, ours: float, seconds: float = 1.0) -> None:
        ticks = 200 * seconds
        self.times = CpuTimes(self.times.busy + round((others + ours) * ticks / 2), self.times.total + round(ticks),
                              self.times.own + round(ours * ticks / 2))
        self.t += seconds


def chooser(machine: FakeMachine, adapt: bool = True, max_threads: int | None = 2):
    said: list[str] = []
    c = ThreadChooser(adapt, said.append, max_threads=max_threads, read=machine.read, clock=machine.clock)
    c.n_cores = 2
    return c, said


def begun(machine: FakeMachine, adapt: bool = True, others: float = 0.0):
    """A chooser as a run sets it up (its 2 threads applied first, as runtime.configure does), then half a second
    of set-up beside `others` busy cores before the first epoch's steps."""
    torch.set_num_threads(2)
    c, said = chooser(machine, adapt)
    c.start()
    machine.advance(others, 0.5, 0.5)
    c.begin_epoch()
    return c, said


def run_steps(c: ThreadChooser, machine: FakeMachine, seconds: float, steps_per_second: float, others: float) -> None:
    """`seconds` of steps at `steps_per_second`, beside `others` busy cores (ours: the threads in use)."""
    for _ in range(round(seconds * steps_per_second)):
        machine.advance(others, min(c.threads, 2 - min(others, 1)), 1 / steps_per_second)
        c.step()


def test_others_busy_is_the_machines_busy_time_less_our_own():
    before, after = CpuTimes(1000, 5000, 300), CpuTimes(1300, 5200, 400)  # 1 s of 2 cores: 300 busy, 100 ours
    assert others_busy(before, after, 2) == pytest.approx(2.0)
    assert others_busy(before, CpuTimes(1100, 5200, 400), 2) == 0.0  # only ours
    assert others_busy(before, before, 2) == 0.0  # no time passed


def test_a_busy_core_takes_a_thread_and_a_quiet_one_gives_it_back():
    m = FakeMachine()
    c, said = begun(m, others=1.0)  # set-up beside a busy core
    assert c.threads == 1 and torch.get_num_threads() == 1
    assert "keeping 1.0 of the 2 cores busy: training on 1 thread" in said[-1]
    run_steps(c, m, seconds=3, steps_per_second=40, others=0.5)  # half a core: inside the hysteresis, kept
    assert c.threads == 1
    run_steps(c, m, seconds=3, steps_per_second=60, others=0.0)
    assert c.threads == 2 and torch.get_num_threads() == 2 and said[-1].endswith("the cores are free again: training on 2 threads")
    run_steps(c, m, seconds=3, steps_per_second=60, others=0.5)  # from 2 threads: half a core is not taken yet
    assert c.threads == 2
    assert c.used[:2] == [2, 1] and c.used[-1] == 2  # what the run records: its digits depend on these changes


def test_a_run_that_does_not_adapt_keeps_its_threads_beside_a_busy_core():
    m = FakeMachine()
    c, said = begun(m, adapt=False, others=1.0)
    run_steps(c, m, seconds=4, steps_per_second=20, others=1.0)
    assert c.threads == 2 and torch.get_num_threads() == 2 and c.used == [2]
    assert len(said) == 1 and "--adapt-threads" in said[0], said


def test_kept_threads_stay_and_the_slowdown_is_said_once_with_what_to_do():
    m = FakeMachine()
    c, said = begun(m, adapt=False)
    run_steps(c, m, seconds=3, steps_per_second=70, others=0.0)
    assert said == []
    run_steps(c, m, seconds=4, steps_per_second=20, others=1.0)  # 3.5x slower
    assert c.threads == 2 and torch.get_num_threads() == 2
    (line,) = [s for s in said if "slower" in s]
    assert "steps are running 3.5x slower than at the fastest in this run" in line, line
    assert "keeping 1.0 of the 2 cores busy" in line and "--adapt-threads" in line, line
    run_steps(c, m, seconds=4, steps_per_second=20, others=1.0)
    assert len(said) == 2 and "waits for them at every step" in said[0]  # each once a run


def test_the_evaluation_between_epochs_is_not_taken_for_slow_steps():
    m = FakeMachine()
    c, said = begun(m)
    run_steps(c, m, seconds=3, steps_per_second=70, others=0.0)
    m.advance(0.0, 2.0, seconds=5)  # evaluating: no steps for 5 s
    c.begin_epoch()
    run_steps(c, m, seconds=3, steps_per_second=70, others=0.0)
    assert not any("slower" in s for s in said), said


@pytest.mark.skipif(cores.PYTORCH_THREADS < 2, reason="PyTorch uses one thread here: nothing to give up")
def test_a_later_run_in_the_same_process_starts_from_pytorchs_count_again():
    m = FakeMachine()
    c, _ = chooser(m, max_threads=None)
    assert torch.get_num_threads() == cores.PYTORCH_THREADS
    c.start()
    m.advance(1.0, 0.5, 0.5)
    c.begin_epoch()
    assert torch.get_num_threads() < cores.PYTORCH_THREADS
    c2, _ = chooser(FakeMachine(), max_threads=None)
    assert c2.max_threads == cores.PYTORCH_THREADS and torch.get_num_threads() == cores.PYTORCH_THREADS


@pytest.mark.processes  # a busy process beside the test
@pytest.mark.skipif(not os.path.exists("/proc/stat") or len(os.sched_getaffinity(0)) < 2, reason="needs /proc and 2 cores")
def test_a_real_busy_process_is_seen_from_proc():
    two = frozenset(sorted(os.sched_getaffinity(0))[:2])
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 20: pass"])
    try:
        time.sleep(0.3)  # started
        before = read_cpu_times(two)
        time.sleep(1.0)
        after = read_cpu_times(two)
    finally:
        spinner.kill()
        spinner.wait()
    assert before is not None and after is not None
    assert others_busy(before, after, 2) >= 0.6  # one core's worth, less what the machine's other work took from it


def test_kept_threads_beside_a_core_already_busy_are_named_once_as_the_reason():
    m = FakeMachine()
    c, said = begun(m, adapt=False, others=1.0)  # busy from the start: no faster window to compare with
    run_steps(c, m, seconds=4, steps_per_second=20, others=1.0)
    assert c.threads == 2
    (line,) = said
    assert "keeping 1.0 of the 2 cores busy, and each of this run's 2 threads waits for them at every step" in line, line
