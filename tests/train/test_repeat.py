"""A seeded CPU run repeats to the digit on the same machine whatever else runs on it: the thread count is the
run's own (train/cores.py), not the other programs' load. Synthetic images: this is about mechanics, not accuracy."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from cnnlab.device import PYTORCH_THREADS
from cnnlab.runs.checkpoint import Checkpoint
from cnnlab.runs.rundir import read_metrics
from cnnlab.train import fit, make_config

from ..support.data import synthetic_mnist

TIME_COLUMNS = ("seconds", "elapsed", "time")

pytestmark = [pytest.mark.processes, pytest.mark.slow, pytest.mark.skipif(  # processes: a busy one beside the run
    PYTORCH_THREADS < 2 or not os.path.exists("/proc/stat"),
    reason="needs 2 threads and /proc: with one thread there is no count for the load to change",
)]


def _busy_core():
    """A process keeping one core busy for at most a minute (killed by the caller)."""
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 60: pass"])
    time.sleep(0.3)  # running before the run's first look at the load
    return spinner


def _run(tmp_path, name: str, data, busy: bool, **kw):
    cfg = make_config("basic_cnn", epochs=2, batch_size=32, val_size=200, device="cpu", seed=7, run_name=name, **kw)
    spinner = _busy_core() if busy else None
    try:
        result = fit(cfg, data, out_root=tmp_path, progress=False)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    rows = [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in read_metrics(result.run_dir / "metrics.csv")]
    weights = Checkpoint.read(result.run_dir / "last.pt").model_state
    return result, rows, weights


def test_a_seeded_run_beside_a_busy_core_repeats_the_idle_run_to_the_digit(tmp_path, reliability):
    data = synthetic_mnist(train=4000, test=200, seed=3)  # ~250 steps: seconds, long enough for the load to be read
    idle, idle_rows, idle_weights = _run(tmp_path, "idle", data, busy=False)
    busy, busy_rows, busy_weights = _run(tmp_path, "busy", data, busy=True)
    assert busy_rows == idle_rows  # every metric, to the last digit written
    assert all(torch.equal(idle_weights[k], busy_weights[k]) for k in idle_weights)
    assert idle.threads == busy.threads == [PYTORCH_THREADS]  # recorded, and never changed
    # The same run asked to adapt beside the busy core gives up a thread: the load the first two runs ignored was
    # there to be seen, so their equality above is not luck. (Where PyTorch's count is not one a core, as with
    # hyper-threads, one busy core leaves it as many free cores as threads, and nothing is given up.)
    if PYTORCH_THREADS == len(os.sched_getaffinity(0)):
        adapted, _, _ = _run(tmp_path, "adapted", data, busy=True, adapt_threads=True)
        assert len(adapted.threads) > 1 and min(adapted.threads) < PYTORCH_THREADS, adapted.threads
    reliability("repeatability", "a seeded basic_cnn run (2 epochs) idle, then beside a process keeping a core busy", 2,
                "identical metrics (time columns aside) and weights; the thread count recorded and unchanged; "
                "with --adapt-threads the same load changed it, and the run recorded the change")
