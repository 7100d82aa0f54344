"""Servers on 127.0.0.1 for tests that need real sockets, streams or concurrency: cnnlab's own web app under a real
uvicorn in a thread of the test process (with cnnlab's settings, serve/server.py), its training API read as the page
reads it, and a throwaway HTTP server standing in for the MNIST mirrors."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (just freed: a connection to it is refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- cnnlab's web app -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def live_server(app: Any, **settings: Any) -> Iterator[int]:
    """Serve `app` until the block ends; yields the port. `settings` override uvicorn's config."""
    import uvicorn

    from cnnlab.serve.server import uvicorn_config

    port = free_port()
    srv = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, **settings))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < end and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        srv.should_exit = True
        thread.join(timeout=60)


def read_events(port: int, into: list | None = None, leave_after: int | None = None,
                until: float = 240.0) -> list[tuple[str, dict]]:
    """The events of /api/train/events as (name, data), appended to `into` as they come, until the server closes the
    stream (it must, after done or error), or until `leave_after` of them, when the client leaves (closes the
    connection)."""
    import json

    import httpx

    into = [] if into is None else into
    name, data = None, []
    with httpx.stream("GET", f"http://127.0.0.1:{port}/api/train/events", timeout=until) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data.append(line.split(":", 1)[1].strip())
            elif not line and name:
                into.append((name, json.loads("\n".join(data))))
                name, data = None, []
                if leave_after is not None and len(into) >= leave_after:
                    break
    return into


def wait_for_training(base: str, ready: Callable[[list[dict]], bool], what: str, timeout: float = 120.0) -> list[dict]:
    """Poll GET `base`/api/train until `ready(events)` holds while the training still runs (it must not end on its
    own meanwhile); the events so far. `what` names the wait in the failure."""
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        snapshot = httpx.get(f"{base}/api/train", timeout=10).json()
        assert snapshot["state"] in ("starting", "running"), snapshot
        if ready(snapshot["events"]):
            return snapshot["events"]
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s")


def has_event(name: str, **data: Any) -> Callable[[list[dict]], bool]:
    """For wait_for_training: whether an event of that name (and those data) has come."""
    return lambda events: any(e["event"] == name and all(e.get(k) == v for k, v in data.items()) for e in events)


# ---- a stand-in for the MNIST mirrors ---------------------------------------------------------------------------


@dataclass
class Route:
    """How the server answers one path.

    Args:
        body: bytes to send.
        status: HTTP status; anything but 200 sends an error page instead of ``body``.
        declared_length: Content-Length to announce; larger than ``body`` simulates a connection cut mid-file.
        delay: seconds to wait before answering, to outlast a client's timeout.
    """

    body: bytes = b""
    status: int = 200
    declared_length: int | None = None
    delay: float = 0.0


@dataclass
class LocalServer:
    """State shared with the handler threads: the routes to serve and the paths requested so far."""

    port: int = 0
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def serve(self, name: str, **route: Any) -> None:
        """Answer GET /name as described by Route(**route); unknown paths get 404."""
        self.routes[name] = Route(**route)


def _handler_for(state: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            name = self.path.lstrip("/")
            state.requests.append(name)
            route = state.routes.get(name, Route(status=404))
            if route.delay:
                state.stop.wait(route.delay)  # woken early at teardown so no thread lingers
            try:
                if route.status != 200:
                    self.send_error(route.status)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(route.declared_length or len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first: that is what the slow route is for
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    return Handler


@contextlib.contextmanager
def mirror() -> Iterator[LocalServer]:
    """A LocalServer on an ephemeral port for the duration of the block."""
    state = LocalServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
