"""Running the app on uvicorn with limits that a stranger on the network cannot wear down.

uvicorn closes a connection idle between requests (`timeout_keep_alive`) and refuses an oversized request head
(h11's limit), but it waits forever for a request head that never ends: twenty clients sending one header byte now
and then (slowloris) hold twenty connections open for as long as they like. `GuardedH11Protocol` gives every
request head HEAD_SECONDS to arrive, from the connection's start or the end of the previous answer; the body has
its own limit in the app (inputs.BODY_SECONDS), and a connection answered before its body was all sent is closed.

It also says which names the server answers to (`host_names`): a page of another site can make its own name point
at 127.0.0.1 (DNS rebinding), and its requests then reach this server as the page's own, but with its name in the
Host header; the app refuses every name not on the list.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any, Iterable

HEAD_SECONDS = 10.0  # a request's head (request line and headers) must arrive within this
KEEP_ALIVE_SECONDS = 5  # an idle connection between requests is closed after this
MAX_HEAD_BYTES = 16 * 1024  # a larger request head is refused (h11's incomplete-event limit)
MAX_CONNECTIONS = 256  # beyond this, uvicorn answers 503 at once rather than queueing


def _protocol_class(head_seconds: float):
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol, with a deadline on each request head."""

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_deadline()

        def on_response_complete(self) -> None:
            answered = self.cycle
            super().on_response_complete()  # may go straight on to a pipelined request
            if self.transport.is_closing():
                return
            if self.conn.their_state is h11.SEND_BODY:
                # Answered before the body was all read (413, 408): the rest is unwanted, and a client trickling
                # it would otherwise keep the connection, since every byte it sends resets the keep-alive timer.
                self.transport.close()
            elif self.cycle is answered:
                self._arm_head_deadline()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not self._head_cycle_before:  # a request head arrived whole
                self._disarm_head_deadline()

        def connection_lost(self, exc) -> None:
            self._disarm_head_deadline()
            super().connection_lost(exc)

        def _arm_head_deadline(self) -> None:
            self._disarm_head_deadline()
            self._head_cycle_before = self.cycle
            self._head_timer = self.loop.call_later(head_seconds, self._head_too_slow)

        def _disarm_head_deadline(self) -> None:
            timer = getattr(self, "_head_timer", None)
            if timer is not None:
                timer.cancel()
            self._head_timer = None
            self._head_cycle_before = self.cycle if hasattr(self, "cycle") else None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def uvicorn_config(app: Any, host: str, port: int, head_seconds: float = HEAD_SECONDS, **overrides: Any):
    """uvicorn's Config for `app` with cnnlab's limits (overrides: other uvicorn settings, e.g. in tests)."""
    import uvicorn

    settings = dict(host=host, port=port, log_level="warning", http=_protocol_class(head_seconds),
                    timeout_keep_alive=KEEP_ALIVE_SECONDS, h11_max_incomplete_event_size=MAX_HEAD_BYTES,
                    limit_concurrency=MAX_CONNECTIONS, timeout_graceful_shutdown=30)
    return uvicorn.Config(app, **{**settings, **overrides})


def run(app: Any, host: str, port: int) -> None:
    """Serve `app` until Ctrl-C."""
    import uvicorn

    uvicorn.Server(uvicorn_config(app, host, port)).run()


def _addresses(host: str) -> set:
    """The addresses `host` stands for: itself when it is one, else what it resolves to (none if it does not)."""
    try:
        return {ipaddress.ip_address(host.strip("[]"))}
    except ValueError:
        try:
            return {ipaddress.ip_address(info[4][0].split("%")[0]) for info in socket.getaddrinfo(host, None)}
        except (OSError, ValueError):
            return set()


def _is_loopback(host: str) -> bool:
    addresses = _addresses(host)
    return bool(addresses) and all(a.is_loopback for a in addresses)


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
# A name, an IPv4 address, or an IPv6 address in brackets; then an optional port. No user, path or space.
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[^\s:\[\]/\\@?#]+)(?::([0-9]{0,5}))?")


def split_host(value: str) -> tuple[str, int | None] | None:
    """The name and port of a Host header (or of --allow-host): "127.0.0.1:8765" -> ("127.0.0.1", 8765),
    "[::1]" -> ("::1", None), "LocalHost." -> ("localhost", None): lowercased, without brackets or a final dot,
    as names are compared. None when `value` is not host[:port]."""
    match = _HOST.fullmatch(value.strip().lower())
    if match is None:
        return None
    name = match.group(1).strip("[]").rstrip(".")
    port = match.group(2)
    if not name or (port and int(port) > 65535):
        return None
    return name, int(port) if port else None  # "host:" has an empty port, which URLs allow


def host_names(host: str, allow: Iterable[str] = ()) -> frozenset[str]:
    """The names a request's Host header may give a server bound to `host`: `host` itself, the loopback names
    (127.0.0.1, localhost, ::1) when it is loopback or every address (0.0.0.0, ::; loopback is one of them), and
    `allow`, the names it is reached by otherwise. No page of another site can make a browser send a loopback name
    for its own requests; its origin is checked apart (inputs.check_same_origin).

    Raises:
        ValueError: `host`, or a name of `allow`, that is not an address or host[:port].
    """
    names = set()
    for given in (host, *allow):
        try:  # an IPv6 address as --host takes it, without brackets
            names.add(str(ipaddress.ip_address(given)))
            continue
        except ValueError:
            split = split_host(given)
        if split is None:
            raise ValueError(f"{given!r} is not a host name")
        names.add(split[0])
    if _is_loopback(host) or any(a.is_unspecified for a in _addresses(host)):
        names.update(LOOPBACK_NAMES)
    return frozenset(names)


def exposure_warning(host: str) -> str | None:
    """One line of warning when `host` is not loopback: others on the network can then reach the page, use the
    CPU and start trainings. None for 127.0.0.1, ::1 or a name that resolves only to loopback."""
    if _is_loopback(host):
        return None
    return (f"warning: bound to {host}, so anyone who can reach this machine can use the page and its API, "
            "and start trainings (use --no-training to refuse them; the default 127.0.0.1 keeps it to this machine)")
