"""In a real Chromium, a page of another origin (http://localhost:Q, beside the server on http://127.0.0.1:P) tries
to start a training and to stop one, as an attacker's page would: a no-cors fetch of text/plain, a CORS fetch of
JSON, and HTML forms. Nothing starts and nothing stops; the page the server serves still starts and stops its
training. Every request that reaches the server is recorded, so the test shows the server refused them itself.

Needs Debian's chromium (/usr/bin/chromium, or $CNNLAB_CHROMIUM) and the playwright package; skips without them
(in CI, where .ci/run installs both, it fails instead)."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from typing import Iterator

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from cnnlab.serve.app import create_app  # noqa: E402

from ..support.browser import chromium  # noqa: E402
from ..support.servers import free_port, live_server  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.real_data, pytest.mark.slow]  # the page trains on the real MNIST

ORDER = '{"model": "basic_cnn", "budget": 15}'

# Run in the other origin's page with the server's URL; each resolves once its request has had an answer (or has
# been blocked by the browser), and says which.
NO_CORS = """async ([url, body]) => {
  try { await fetch(url, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body}); return "sent"; }
  catch (e) { return "blocked"; } }"""
CORS_JSON = """async ([url, body]) => {
  try { const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body}); return "read " + r.status; }
  catch (e) { return "blocked"; } }"""
# A text/plain form can carry JSON: the body is name=value, and the name and value are chosen to make one.
FORM = """([url, body, enctype]) => new Promise(done => {
  const sink = document.createElement("iframe");
  sink.name = "sink" + Math.random();
  document.body.append(sink);
  sink.onload = () => done("sent");
  const form = document.createElement("form");
  Object.assign(form, {method: "POST", action: url, enctype, target: sink.name});
  const field = document.createElement("input");
  field.name = body.slice(0, -1) + ', "x": "';
  field.value = '"}';
  form.append(field);
  document.body.append(form);
  form.submit();
})"""


def _recording(app, seen: list):
    """`app` with every request it answers recorded as (method, path, status)."""

    async def recorded(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                seen.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await app(scope, receive, send_and_note)

    return recorded


@contextlib.contextmanager
def _other_origin() -> Iterator[str]:
    """A page of another origin: a plain HTTP server on 127.0.0.1:Q, opened as http://localhost:Q (another origin
    than http://127.0.0.1:P, and one Chromium lets talk to loopback, as a local attacker's page would)."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>another site</title><p>hello"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _wait(page, condition: str, trainer, timeout: float = 120.0) -> None:
    """Wait for `condition` on the page; on timeout, fail saying what the page and the training said."""
    from playwright.sync_api import TimeoutError as PageTimeout

    try:
        page.wait_for_function(condition, timeout=timeout * 1000)
    except PageTimeout:
        said = page.evaluate("['train-status', 'train-note'].map(id => document.getElementById(id).textContent)")
        events = trainer.job.events[-3:] if trainer.job else []
        raise AssertionError(f"not within {timeout:.0f} s: {condition}; the page said {said}; the last events {events}") from None


def _attack(page, url: str) -> list[str]:
    """Every way the other origin's page tries `url`; what the browser made of each."""
    return [page.evaluate(NO_CORS, [url, ORDER]), page.evaluate(CORS_JSON, [url, ORDER]),
            page.evaluate(FORM, [url, ORDER, "text/plain"]),
            page.evaluate(FORM, [url, ORDER, "application/x-www-form-urlencoded"])]


def test_a_page_of_another_origin_can_neither_start_nor_stop_a_training(tmp_path, reliability):
    seen: list[tuple[str, str, int]] = []
    app = create_app(runs_root=tmp_path / "runs")
    trainer = app.state.trainer
    with chromium() as browser, live_server(_recording(app, seen)) as port, _other_origin() as elsewhere:
        base = f"http://127.0.0.1:{port}"
        foreign = browser.new_context().new_page()
        foreign.goto(elsewhere)

        # ---- a start from the other origin: refused, and nothing runs
        outcomes = _attack(foreign, f"{base}/api/train")
        assert outcomes[0] == "sent" and outcomes[1] == "blocked" and outcomes[2:] == ["sent", "sent"], outcomes
        starts = [s for m, p, s in seen if (m, p) == ("POST", "/api/train")]
        assert len(starts) == 3 and all(s == 403 for s in starts), seen  # the fetch and the forms reached it: 403
        assert ("OPTIONS", "/api/train") in [(m, p) for m, p, _ in seen]  # the JSON fetch asked first, and no more
        time.sleep(1.0)  # a training started by any of them would have launched its process by now
        assert trainer.job is None
        assert httpx.get(f"{base}/api/train").json()["state"] == "idle"

        # ---- the page itself starts one
        own = browser.new_context().new_page()
        own.goto(base + "/")
        own.wait_for_function("document.getElementById('train-model').options.length > 0")
        own.click("#tab-train")
        own.select_option("#train-model", "basic_cnn")
        own.fill("#train-budget", "120")
        own.click("#train-start")
        _wait(own, "Number(document.getElementById('train-chart').dataset.points) >= 1", trainer)
        job = trainer.job
        assert job is not None and job.state == "running" and job.process.poll() is None

        # ---- a stop from the other origin: refused, and it runs on
        seen.clear()
        outcomes = _attack(foreign, f"{base}/api/train/stop")
        assert outcomes[0] == "sent" and outcomes[1] == "blocked" and outcomes[2:] == ["sent", "sent"], outcomes
        stops = [s for m, p, s in seen if (m, p) == ("POST", "/api/train/stop")]
        assert len(stops) == 3 and all(s == 403 for s in stops), seen
        assert not job.stop_asked and job.state == "running" and job.process.poll() is None

        # ---- the page itself stops it, keeping what it trained
        own.click("#train-stop")
        _wait(own, "document.getElementById('train').dataset.state === 'stopped'", trainer)
        assert job.stop_asked and job.state == "stopped"
        assert [m["model"] for m in httpx.get(f"{base}/api/model").json()["models"]] == ["basic_cnn"]
    reliability("web API in Chromium, another origin's page", "start and stop tried from http://localhost:Q: a no-cors "
                "text/plain fetch, a CORS JSON fetch, a text/plain form holding JSON, a urlencoded form", 8,
                "each form and no-cors fetch reached the server and got 403, the JSON fetch never passed its "
                "preflight; nothing started or stopped; the page itself started and stopped its training")
