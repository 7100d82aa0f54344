"""A training from the page keeps what it trained when the server dies: a real `cnnlab serve` in a process of its own
starts a training, the server is then stopped from the page or killed (SIGKILL, SIGTERM, SIGINT as Ctrl-C sends
it, SIGHUP as a closed terminal sends it), and whatever ended it, the run is the one a stop from the page leaves:
stopped at a log step, its epoch in progress evaluated as the last, summary.json and best.pt written, loaded and
served by the next server.

Each case trains basic_cnn on the real MNIST (from the cache) for a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.locks import FileLock  # noqa: E402
from cnnlab.runs import load, load_run, newest_finished  # noqa: E402
from cnnlab.serve.app import create_app  # noqa: E402
from cnnlab.train.remote import LOG_EVERY  # noqa: E402

from ..support.servers import free_port, has_event, live_server, wait_for_training  # noqa: E402

pytestmark = [  # every test trains basic_cnn on the real MNIST in a process of its own (and most start a server)
    pytest.mark.processes, pytest.mark.real_data,
    pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="the server is ended by POSIX signals"),
]

# How each case ends the training: a stop from the page (what the others must match), or the server's death.
ENDINGS = {
    "page stop": None,
    "SIGKILL": signal.SIGKILL,
    "SIGTERM": signal.SIGTERM,
    "SIGINT": signal.SIGINT,  # what Ctrl-C in the server's terminal sends it (the child has a session of its own)
    "SIGHUP": signal.SIGHUP,  # its terminal closed: uvicorn does not handle it, so the server dies at once
}


def _start_server(runs_root: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`cnnlab serve` in a process of its own, its output in `log`; it and its address once it answers."""
    port = free_port()
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "cnnlab", "serve", "--port", str(port), "--runs-root", str(runs_root)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while time.monotonic() < end:
        assert server.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise AssertionError(f"the server did not answer within 60 s: {log.read_text()}")


def _running(pid: int) -> bool:
    """Whether process `pid` still runs (an orphan's zombie, which no init reaped yet, has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the pid went to another user's process: ours has ended
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # gone meanwhile, or a system without /proc (then os.kill's answer stands)
        return not Path("/proc/self").exists()


def _wait_for_exit(pid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not _running(pid):
            return True
        time.sleep(0.1)
    return False


def _train_then_end(tmp_path: Path, ending: str, after_first_epoch: bool) -> dict:
    """Start a training through the page's API, end it as `ending` says once it has taken a step (in its first
    epoch, or in its second), and wait for the training process to exit. What happened, for the assertions."""
    runs_root = tmp_path / "runs"
    log = tmp_path / "server.log"
    server, base = _start_server(runs_root, log)
    child = None
    try:
        # The page's own request: JSON, no Origin header (a same-origin fetch from the page sends none).
        order = {"model": "basic_cnn", "budget": 60 if after_first_epoch else 15}
        r = httpx.post(f"{base}/api/train", content=json.dumps(order), headers={"Content-Type": "application/json"})
        assert r.status_code == 202, r.text
        epoch = 2 if after_first_epoch else 1
        events = wait_for_training(base, has_event("step", epoch=epoch), f"step in epoch {epoch}")
        started = next(e for e in events if e["event"] == "started")
        run_dir = runs_root / started["run"]
        child = int(FileLock(run_dir / ".lock").holder().split()[-1])  # the training process wrote its pid there
        assert child != server.pid and _running(child)

        if ENDINGS[ending] is None:
            stop = httpx.post(f"{base}/api/train/stop", content="{}", headers={"Content-Type": "application/json"})
            assert stop.status_code == 202, stop.text  # sent as the page sends it
        else:
            server.send_signal(ENDINGS[ending])
            server.wait(60)  # on SIGTERM and SIGINT the server first stops the child and waits for it
        assert _wait_for_exit(child, 120), f"the training process {child} still runs"
        lock = FileLock(run_dir / ".lock")
        assert lock.acquire(blocking=False)  # released: nobody trains in the run any more
        lock.release()
        return {"run_dir": run_dir, "runs_root": runs_root, "steps_per_epoch": started["steps_per_epoch"],
                "seen": max(e["step"] for e in events if e["event"] == "step"), "log": log}
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if child is not None and _running(child):  # only after a failed assertion above
            os.kill(child, signal.SIGKILL)


def _assert_kept_as_a_page_stop_keeps_it(got: dict, real_mnist, epochs_done: int) -> float:
    """The run a stop from the page leaves: finished (summary.json, best.pt), its last epoch a partial pass ended
    at a log step after the last step seen, evaluated; found, loaded and served as any finished run."""
    run_dir, per_epoch = got["run_dir"], got["steps_per_epoch"]
    assert run_dir.is_dir(), f"the run directory is gone: {got['log'].read_text()[-2000:]}"
    for name in ("summary.json", "best.pt", "last.pt", "metrics.csv"):
        assert (run_dir / name).is_file(), (name, sorted(p.name for p in run_dir.iterdir()))
    run = load_run(run_dir)
    assert run.summary["epochs"] == len(run.metrics) == epochs_done + 1, run.metrics
    assert [row["steps"] for row in run.metrics[:-1]] == [per_epoch * (i + 1) for i in range(epochs_done)]
    last = int(run.metrics[-1]["steps"])
    assert got["seen"] <= last < per_epoch * (epochs_done + 1)  # not before the last step seen; a partial pass
    assert (last - per_epoch * epochs_done) % LOG_EVERY == 0  # a stop is taken at a log step (counted in its epoch)
    assert newest_finished(got["runs_root"]) == [run_dir]  # what the next `cnnlab serve` there serves
    with TestClient(create_app(runs_root=got["runs_root"]), base_url="http://127.0.0.1") as client:
        assert [m["id"] for m in client.get("/api/model").json()["models"]] == [run_dir.name]
    accuracy = load(run_dir, device="cpu").evaluate(real_mnist)
    assert abs(accuracy - run.summary["test_acc"]) < 0.005  # the weights kept are the ones it evaluated
    return accuracy


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_training_in_its_first_epoch_is_kept_when_the_server_dies(tmp_path, ending, real_mnist, reliability):
    if ending == "SIGHUP" and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        pytest.skip("SIGHUP is ignored in this process (started under nohup): the server inherits that and lives on")
    got = _train_then_end(tmp_path, ending, after_first_epoch=False)
    _assert_kept_as_a_page_stop_keeps_it(got, real_mnist, epochs_done=0)
    if ENDINGS[ending] is not None:
        reliability("web page training, the server's death", f"{ending} to `cnnlab serve` during a training's first "
                    "epoch (basic_cnn, 15 s budget, real MNIST)", 1,
                    "the training ended at its next log step as a page stop ends it: the partial epoch evaluated, "
                    "summary.json and best.pt written, served by the next server")


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["page stop", "SIGKILL"])
def test_a_training_past_its_first_epoch_is_kept_when_the_server_is_killed(tmp_path, ending, real_mnist, reliability):
    got = _train_then_end(tmp_path, ending, after_first_epoch=True)
    accuracy = _assert_kept_as_a_page_stop_keeps_it(got, real_mnist, epochs_done=1)
    assert accuracy > 0.9
    if ENDINGS[ending] is not None:
        reliability("web page training, the server's death", f"{ending} to `cnnlab serve` in a training's second "
                    "epoch (basic_cnn, 60 s budget, real MNIST)", 1,
                    "the first epoch kept, the second ended at its next log step as a page stop ends it; "
                    "summary.json written, served by the next server")


def test_a_training_whose_pipes_close_writes_nothing_to_them_and_finishes(tmp_path, reliability):
    """The training process alone, its server side gone without a signal: stdin and stdout closed at once."""
    runs_root = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "cnnlab.train.remote"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    order = {"model": "basic_cnn", "budget": 30, "runs_root": str(runs_root), "threads": 1, "device": "cpu"}
    child.stdin.write(json.dumps(order) + "\n")
    child.stdin.flush()
    events: list[dict] = []
    while not events or events[-1]["event"] != "step":
        line = child.stdout.readline()
        assert line, child.stderr.read()[-2000:]  # ended before its first step
        events.append(json.loads(line))
    per_epoch, seen = events[0]["steps_per_epoch"], events[-1]["step"]
    for pipe in (child.stdin, child.stdout, child.stderr):
        pipe.close()
    assert child.wait(120) == 0  # no write to a closed pipe failed it
    runs = [p for p in runs_root.iterdir() if p.is_dir()]
    assert len(runs) == 1 and newest_finished(runs_root) == runs
    metrics = load_run(runs[0]).metrics
    assert len(metrics) == 1 and seen <= metrics[0]["steps"] < per_epoch and metrics[0]["steps"] % LOG_EVERY == 0
    reliability("web page training, the server's death", "the training process's stdin, stdout and stderr closed "
                "after its first step (basic_cnn, real MNIST)", 1,
                "exit code 0; the partial first epoch kept as a finished run, as a page stop keeps it")


def test_a_training_whose_stdin_alone_closes_stops_and_still_reports_its_end(tmp_path):
    """A closed stdin is a stop, but while stdout is read the events go on: the end is still reported there."""
    runs_root = tmp_path / "runs"
    child = subprocess.Popen([sys.executable, "-m", "cnnlab.train.remote"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    order = {"model": "basic_cnn", "budget": 30, "runs_root": str(runs_root), "threads": 1, "device": "cpu"}
    child.stdin.write(json.dumps(order) + "\n")
    child.stdin.flush()
    line = ""
    while '"step"' not in line:
        line = child.stdout.readline()
        assert line, "ended before its first step"
    child.stdin.close()
    events = [json.loads(line) for line in child.stdout]
    assert child.wait(120) == 0
    assert events[-1]["event"] == "finished" and events[-1]["stopped"] is True, events[-2:]
    assert [p.name for p in newest_finished(runs_root)] == [events[-1]["run"]]


def test_a_shutdown_that_cannot_wait_for_a_stopped_training_leaves_it_to_finish(tmp_path):
    # A large model on a slow CPU may take longer to evaluate and write than the shutdown waits: it is never killed.
    runs_root = tmp_path / "runs"
    app = create_app(runs_root=runs_root)
    with live_server(app) as port:
        base = f"http://127.0.0.1:{port}"
        r = httpx.post(f"{base}/api/train", json={"model": "basic_cnn", "budget": 15})
        assert r.status_code == 202, r.text
        wait_for_training(base, has_event("step"), "a step")
        process = app.state.trainer.job.process
        app.state.trainer.close(grace=0.0)  # asks it to stop, and waits for nothing
        assert process.wait(120) == 0  # it finished on its own: not killed (-9), not failed
        end = time.monotonic() + 60
        while (snapshot := httpx.get(f"{base}/api/train").json())["state"] in ("starting", "running"):
            assert time.monotonic() < end, snapshot
            time.sleep(0.05)
        assert snapshot["state"] == "stopped", snapshot["events"][-2:]  # ended as a page stop ends it, and served
    (run_dir,) = [p for p in runs_root.iterdir() if p.is_dir()]
    assert (run_dir / "summary.json").is_file() and newest_finished(runs_root) == [run_dir]
