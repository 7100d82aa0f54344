"""A real uvicorn server on 127.0.0.1 in a thread of the test process, with cnnlab's own settings
(serve/server.py): for tests that need real sockets, streams or concurrency."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
