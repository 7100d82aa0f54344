"""HTTP download with short timeouts, a progress bar, and failures phrased for a user."""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.parse
import urllib.request

from tqdm.auto import tqdm

from cnnlab.data.errors import DataError

DEFAULT_TIMEOUT = 5.0  # seconds per connect and per read: long enough for a slow link, short enough to fail fast
_CHUNK = 1 << 16
# Some mirrors refuse the default "Python-urllib" agent.
_HEADERS = {"User-Agent": "cnnlab"}


class DownloadError(DataError):
    """One URL could not be fetched.

    Attributes:
        url: what was asked for.
        reason: short human-readable cause ("HTTP 404 Not Found", "timed out after 5 s", ...).
        unreachable: True when the host itself failed (DNS, refused, timeout): other files on the same host
            would fail the same way, so callers skip the host instead of waiting once per file.
    """

    def __init__(self, url: str, reason: str, *, unreachable: bool) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.unreachable = unreachable


def _describe_os_error(err: BaseException, host: str, timeout: float) -> str:
    """Turn a socket-level failure into a few words."""
    if isinstance(err, socket.gaierror):
        return f"cannot resolve host {host} (no network or DNS?)"
    if isinstance(err, TimeoutError):  # socket.timeout is TimeoutError since 3.10
        return f"no answer within {timeout:g} s"
    if isinstance(err, ConnectionRefusedError):
        return f"connection refused by {host}"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def fetch_url(url: str, *, timeout: float = DEFAULT_TIMEOUT, progress: bool = True, max_bytes: int = 1 << 26) -> bytes:
    """Download ``url`` into memory, checking the body against Content-Length.

    Args:
        url: http(s) URL.
        timeout: seconds allowed for the connection and for each read.
        progress: show a tqdm bar on stderr.
        max_bytes: refuse bodies larger than this (a wrong URL should not fill memory).

    Raises:
        DownloadError: with ``unreachable`` set when the host, not just this file, failed.
    """
    host = urllib.parse.urlsplit(url).hostname or url
    request = urllib.request.Request(url, headers=_HEADERS)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length_header = response.headers.get("Content-Length")
            length = int(length_header) if length_header and length_header.isdigit() else None
            if length is not None and length > max_bytes:
                raise DownloadError(url, f"refusing {length} bytes (limit {max_bytes})", unreachable=False)
            body = bytearray()
            name = url.rsplit("/", 1)[-1]
            with tqdm(total=length, desc=name, unit="B", unit_scale=True, disable=not progress, leave=False) as bar:
                while chunk := response.read(_CHUNK):
                    body += chunk
                    bar.update(len(chunk))
                    if len(body) > max_bytes:
                        raise DownloadError(url, f"body exceeds {max_bytes} bytes", unreachable=False)
    except urllib.error.HTTPError as err:
        raise DownloadError(url, f"HTTP {err.code} {err.reason}", unreachable=False) from None
    except urllib.error.URLError as err:
        # Raised before any response: DNS, refused connection, connect timeout, TLS.
        raise DownloadError(url, _describe_os_error(err.reason, host, timeout), unreachable=True) from None
    except http.client.IncompleteRead as err:
        got = len(err.partial)
        raise DownloadError(url, f"truncated: connection closed after {got} bytes", unreachable=False) from None
    except (OSError, http.client.HTTPException) as err:
        # After the request went out: read timeout, reset, malformed response. Treat the host as down so a
        # stalled mirror costs one timeout, not four.
        raise DownloadError(url, _describe_os_error(err, host, timeout), unreachable=True) from None
    # http.client returns a short body, without raising, when the server closes early on some paths.
    if length is not None and len(body) != length:
        raise DownloadError(url, f"truncated: got {len(body)} of {length} bytes", unreachable=False)
    return bytes(body)
