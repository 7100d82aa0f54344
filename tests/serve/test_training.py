"""Training from the page: POST /api/train starts a run in a process of its own, its events stream as Server-Sent
Events, the finished run is served at once, and the server keeps answering throughout. The slow tests train on the
real MNIST for 15 s (the smallest budget the page offers)."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.runs import load_run  # noqa: E402
from cnnlab.serve.app import create_app  # noqa: E402

from ..support.servers import has_event, live_server, read_events, wait_for_training  # noqa: E402


def _digit_png() -> bytes:
    img = Image.new("L", (140, 140), 255)
    img.paste(0, (60, 20, 80, 120))  # a 1, drawn dark on white as the page sends it
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
@pytest.mark.processes  # the server's training child, on the real MNIST
@pytest.mark.real_data
def test_a_training_from_the_page_streams_its_curve_and_is_served_when_done(tmp_path, reliability):
    app = create_app(runs_root=tmp_path / "runs")
    with live_server(app) as port:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/api/model").json()["models"] == []  # nothing finished yet: nothing served
        assert httpx.post(f"{base}/api/predict", content=_digit_png(), headers={"content-type": "image/png"}).status_code == 409

        r = httpx.post(f"{base}/api/train", json={"model": "basic_cnn", "budget": 15})
        assert r.status_code == 202 and r.json()["model"] == "basic_cnn" and r.json()["budget"] == 15
        again = httpx.post(f"{base}/api/train", json={"model": "resnet", "budget": 20})
        assert again.status_code == 409 and "already running (basic_cnn" in again.json()["error"]

        stream: list = []
        reader = threading.Thread(target=lambda: stream.extend(read_events(port)))
        reader.start()
        answers = []
        while reader.is_alive():  # the server answers while the child trains
            t0 = time.monotonic()
            answers.append((httpx.get(f"{base}/api/health", timeout=10).status_code, time.monotonic() - t0))
            time.sleep(0.5)
        reader.join()

        names = [n for n, _ in stream]
        assert names[0] == "status" and names[-1] == "done", names
        steps = [d["step"] for n, d in stream if n == "step"]
        assert len(steps) >= 3 and steps == sorted(set(steps))  # a curve that grows
        epochs = [d for n, d in stream if n == "epoch"]
        assert epochs and 0.9 < epochs[-1]["test_acc"] <= 1 and epochs[-1]["train_loss"] > 0
        started = next(d for n, d in stream if n == "started")
        last_step = [d for n, d in stream if n == "step"][-1]
        assert "/" not in started["run"] and started["total_steps"] > 0 and last_step["total_steps"] >= last_step["step"]
        done = stream[-1][1]
        assert done["stopped"] is False and 0.9 < done["test_accuracy"] <= 1
        assert all(code == 200 for code, _ in answers) and len(answers) >= 5

        listing = httpx.get(f"{base}/api/model").json()
        assert [m["id"] for m in listing["models"]] == [done["model"]] == [started["run"]]
        assert listing["default"] == done["model"] and listing["training"]["state"] == "finished"
        r = httpx.post(f"{base}/api/predict?model={done['model']}", content=_digit_png(), headers={"content-type": "image/png"})
        assert r.status_code == 200 and r.json()["model"] == done["model"]
        # A second watcher after the end gets the whole story again, and the stream closes.
        assert [n for n, _ in read_events(port)] == names
    run = load_run(tmp_path / "runs" / done["model"])  # an ordinary run directory
    assert run.config["model"] == "basic_cnn" and run.config["time_budget"] == 15
    assert str(tmp_path) not in json.dumps(stream)
    reliability("web page training", "a 15 s basic_cnn training on MNIST started through the API, /api/health polled meanwhile",
                len(answers), f"{len(steps)} step and {len(epochs)} epoch events, then done; /api/health answered "
                "200 every time; the run served at once and a second start refused with 409")


@pytest.mark.processes  # the server's training child, on the real MNIST
@pytest.mark.real_data
def test_stop_keeps_what_was_trained_and_serves_it(tmp_path):
    app = create_app(runs_root=tmp_path / "runs")
    with live_server(app) as port:
        base = f"http://127.0.0.1:{port}"
        assert httpx.post(f"{base}/api/train", json={"model": "basic_cnn", "budget": 120}).status_code == 202
        wait_for_training(base, has_event("step"), "a step")
        r = httpx.post(f"{base}/api/train/stop", json={})
        assert r.status_code == 202 and r.json() == {"stopping": True}
        stream = read_events(port)
        done = stream[-1]
        assert done[0] == "done" and done[1]["stopped"] is True, stream[-3:]
        assert httpx.get(f"{base}/api/train").json()["state"] == "stopped"
        assert [m["id"] for m in httpx.get(f"{base}/api/model").json()["models"]] == [done[1]["model"]]
        assert httpx.post(f"{base}/api/train/stop", json={}).status_code == 409  # nothing runs now
    run = load_run(tmp_path / "runs" / done[1]["model"])
    planned = max(d["total_steps"] for n, d in stream if n == "step")  # a budget revises its plan as it goes
    assert run.metrics[-1]["steps"] < planned  # it stopped early, as an ordinary finished run


@pytest.mark.processes  # the server's training child, on the real MNIST
@pytest.mark.real_data
def test_a_child_that_dies_is_a_failed_training_and_the_server_stays_up(tmp_path):
    app = create_app(runs_root=tmp_path / "runs")
    with live_server(app) as port:
        base = f"http://127.0.0.1:{port}"
        assert httpx.post(f"{base}/api/train", json={"model": "basic_cnn", "budget": 60}).status_code == 202
        wait_for_training(base, has_event("started"), "the start")
        app.state.trainer.job.process.kill()
        stream = read_events(port)
        assert stream[-1][0] == "error" and "killed" in stream[-1][1]["message"], stream[-2:]
        assert httpx.get(f"{base}/api/train").json()["state"] == "failed"
        assert httpx.get(f"{base}/api/health").json() == {"status": "ok"}
        # and a new training may start
        assert httpx.post(f"{base}/api/train", json={"model": "basic_cnn", "budget": 15}).status_code == 202
    # The server's shutdown stopped that one: no child outlives it.
    assert app.state.trainer.job.process.poll() is not None


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with TestClient(create_app(runs_root=tmp_path_factory.mktemp("runs")), base_url="http://127.0.0.1") as c:
        yield c


BAD_ORDERS = {
    "no body": (400, {"content": b"", "headers": {"content-type": "application/json"}}),
    "not JSON": (400, {"content": b"{model", "headers": {"content-type": "application/json"}}),
    "an array": (400, {"json": ["resnet", 30]}),
    "nested 50,000 deep": (400, {"content": b"[" * 50_000, "headers": {"content-type": "application/json"}}),
    "no model": (400, {"json": {"budget": 30}}),
    "model not a string": (400, {"json": {"model": 3, "budget": 30}}),
    "unknown model": (422, {"json": {"model": "alexnet", "budget": 30}}),
    "no budget": (400, {"json": {"model": "resnet"}}),
    "budget a string": (400, {"json": {"model": "resnet", "budget": "30"}}),
    "budget true": (400, {"json": {"model": "resnet", "budget": True}}),
    "budget too short": (422, {"json": {"model": "resnet", "budget": 14}}),
    "budget too long": (422, {"json": {"model": "resnet", "budget": 301}}),
    "budget infinite": (422, {"content": b'{"model": "resnet", "budget": 1e400}', "headers": {"content-type": "application/json"}}),
    "budget NaN": (422, {"content": b'{"model": "resnet", "budget": NaN}', "headers": {"content-type": "application/json"}}),
    "budget of 5,000 digits": (400, {"content": b'{"model": "resnet", "budget": ' + b"9" * 5000 + b"}",
                                     "headers": {"content-type": "application/json"}}),
    "unknown dataset": (422, {"json": {"model": "resnet", "budget": 30, "dataset": "cifar"}}),
    "a folder of the server's": (422, {"json": {"model": "resnet", "budget": 30, "dataset": "imagefolder:/etc"}}),
    "body over 64 kB": (413, {"json": {"model": "resnet", "budget": 30, "pad": "x" * 70_000}}),
}


@pytest.mark.parametrize("name", list(BAD_ORDERS))
def test_bad_training_orders_get_a_4xx_naming_what_is_valid(client, name, reliability):
    status, kwargs = BAD_ORDERS[name]
    r = client.post("/api/train", **kwargs)
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["error"]
    if name == "unknown model":
        assert "inception_net" in r.json()["error"] and "resnet" in r.json()["error"]
    if name.startswith("budget too"):
        assert "15" in r.json()["error"] and "300" in r.json()["error"]
    assert client.get("/api/train").json()["state"] == "idle"  # nothing started
    reliability("web API /api/train", "bad training orders: " + ", ".join(BAD_ORDERS), 1,
                "each a 400, 413 or 422 naming what is valid; nothing started")


def test_with_nothing_running_stop_is_409_and_the_stream_says_idle_and_closes(client):
    r = client.post("/api/train/stop", json={})
    assert r.status_code == 409 and "no training" in r.json()["error"]
    assert client.get("/api/train").json() == {"state": "idle", "model": None, "budget": None, "elapsed": 0, "events": []}
    text = client.get("/api/train/events").text
    assert text.startswith("event: status\n") and json.loads(text.split("data:", 1)[1])["state"] == "idle"


def test_a_server_without_training_refuses_it_with_403(tmp_path):
    with TestClient(create_app(runs_root=tmp_path, training=False), base_url="http://127.0.0.1") as c:
        r = c.post("/api/train", json={"model": "resnet", "budget": 30})
        assert r.status_code == 403 and "--no-training" in r.json()["error"]
        assert c.get("/api/model").json()["training"]["enabled"] is False
