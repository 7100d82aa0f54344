"""Many watchers of one training: a stream client that leaves touches its own stream alone, and the others receive
every event through `done`. A real training on the real MNIST, for the smallest budget the page offers (15 s)."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from cnnlab.serve.app import create_app  # noqa: E402
from cnnlab.serve.training import BUDGET  # noqa: E402

from ..support.servers import live_server, read_events  # noqa: E402

LEAVES_AFTER = 5  # events the leaving client reads: the training's first steps are under way by then


@pytest.mark.slow
@pytest.mark.processes  # the server's training child, on the real MNIST
@pytest.mark.real_data
def test_a_stream_client_leaving_cuts_no_other(tmp_path, reliability):
    app = create_app(runs_root=tmp_path / "runs")
    with live_server(app) as port:
        r = httpx.post(f"http://127.0.0.1:{port}/api/train", json={"model": "basic_cnn", "budget": BUDGET[0]})
        assert r.status_code == 202, r.text
        streams: dict[str, list] = {"leaves": [], "stays 1": [], "stays 2": []}
        failures: list[str] = []

        def watch(name: str) -> None:
            try:
                read_events(port, streams[name], LEAVES_AFTER if name == "leaves" else None)
            except Exception as e:  # a stream cut short shows here, and fails the test below
                failures.append(f"{name}: {type(e).__name__}: {e}")

        watchers = [threading.Thread(target=watch, args=(name,)) for name in streams]
        for w in watchers:
            w.start()
        for w in watchers:
            w.join(300)
        assert not any(w.is_alive() for w in watchers), "a stream was still open after 300 s"
        snapshot = httpx.get(f"http://127.0.0.1:{port}/api/train").json()
    assert not failures, failures
    every = [(e.pop("event"), e) for e in snapshot["events"]]
    assert every[-1][0] == "done" and snapshot["state"] == "finished", every[-3:]
    steps = [d for n, d in every if n == "step"]
    assert len(steps) >= 3, every  # the leaver left while the training still had steps to tell
    assert streams["leaves"] == every[:LEAVES_AFTER]
    assert streams["stays 1"] == every and streams["stays 2"] == every, (len(streams["stays 1"]), len(streams["stays 2"]), len(every))
    reliability("web training stream", "three clients follow a 15 s training; one leaves after 5 events", 3,
                f"the other two received all {len(every)} events through done")
