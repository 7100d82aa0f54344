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
