"""The HTTP route against a local server: every way a mirror can fail, and that none leaves a file behind."""

from __future__ import annotations

import gzip
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cnnlab.data import DataError, load_mnist
from cnnlab.data.fetch.cache import atomic_write
from cnnlab.data.fetch.download import DownloadError, fetch_url
from cnnlab.data.fetch.official import MNIST_FILES, TRAIN_LABELS, OfficialFile


SHORT = 0.3  # seconds: the client timeout the slow-server tests must outlast
LATE = 100 * SHORT  # a slow server's delay: a client done before it gave up on the server (a margin no load eats)


def test_fetch_good_file(http_server) -> None:
    body = bytes(range(256)) * 1000
    http_server.serve("f.gz", body=body)
    assert fetch_url(http_server.url + "f.gz", timeout=SHORT, progress=True) == body


def test_fetch_404(http_server) -> None:
    with pytest.raises(DownloadError) as info:
        fetch_url(http_server.url + "missing.gz", timeout=SHORT, progress=False)
    assert info.value.reason == "HTTP 404 Not Found"
    assert not info.value.unreachable  # the host answered: other files there may exist
    assert str(info.value).startswith(http_server.url + "missing.gz: ")


def test_fetch_truncated_body(http_server) -> None:
    http_server.serve("f.gz", body=b"x" * 1000, declared_length=5000)
    with pytest.raises(DownloadError, match="truncated") as info:
        fetch_url(http_server.url + "f.gz", timeout=SHORT, progress=False)
    assert not info.value.unreachable


def test_fetch_slow_server_times_out_quickly(http_server) -> None:
    http_server.serve("f.gz", body=b"late", delay=LATE)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=f"no answer within {SHORT:g} s") as info:
        fetch_url(http_server.url + "f.gz", timeout=SHORT, progress=False)
    assert time.monotonic() - start < LATE  # gave up before the server would have answered
    assert info.value.unreachable


def test_fetch_refused(refused_url: str) -> None:
    with pytest.raises(DownloadError, match="connection refused by 127.0.0.1") as info:
        fetch_url(refused_url + "f.gz", timeout=SHORT, progress=False)
    assert info.value.unreachable


def test_fetch_unresolvable_host_fails_fast() -> None:
    # .invalid is reserved (RFC 2606): resolution fails with or without a network.
    start = time.monotonic()
    with pytest.raises(DownloadError, match="cannot resolve host mnist.invalid") as info:
        fetch_url("http://mnist.invalid/f.gz", timeout=SHORT, progress=False)
    assert info.value.unreachable
    assert time.monotonic() - start < 3


def test_fetch_refuses_oversized_body(http_server) -> None:
    http_server.serve("f.gz", body=b"x" * 5000)
    with pytest.raises(DownloadError, match="refusing 5000 bytes"):
        fetch_url(http_server.url + "f.gz", timeout=SHORT, progress=False, max_bytes=4096)


def test_atomic_write_leaves_complete_file_only(tmp_path: Path, files_under) -> None:
    target = tmp_path / "sub" / "f"
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(DataError, match="does not match"):
        atomic_write(target, b"newer", expected_sha256="0" * 64)
    assert target.read_bytes() == b"new"  # the old file survives a failed write
    assert files_under(tmp_path) == ["sub/f"]  # and no .part file is left


def test_atomic_write_reports_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(DataError, match="CNNLAB_CACHE"):
        atomic_write(blocker / "f", b"x")


# Through load_mnist: what each bad mirror does to the whole chain. The files cannot be the real ones here (the
# real-data route is in test_mnist_real.py), so every case ends in DataError; what matters is the message and
# that the cache stays clean.
_NOISE = random.Random(0).randbytes(20_000)  # incompressible, so a cut-off body really is cut off


def _right_size_wrong_content(spec: OfficialFile) -> bytes:
    return gzip.compress(bytes(spec.size), compresslevel=1)


@pytest.mark.parametrize(
    ("route", "fragment"),
    [
        ({"body": "right size, wrong content"}, "SHA-256 mismatch (corrupt, or not the official"),
        ({"body": b"not gzip at all"}, "bad gzip"),
        ({"status": 404}, "HTTP 404 Not Found (all 4 files)"),
        ({"body": _NOISE[:5000], "declared_length": len(_NOISE)}, "truncated: "),
        ({"body": _NOISE, "delay": LATE}, f"unreachable: no answer within {SHORT:g} s"),
    ],
    ids=["corrupt", "not-gzip", "404", "truncated", "slow"],
)
def test_bad_mirror_is_reported_and_leaves_nothing(
    http_server, tmp_path: Path, no_pip: Callable, files_under: Callable, route: dict, fragment: str, reliability
) -> None:
    for spec in MNIST_FILES:
        if route.get("body") == "right size, wrong content":
            route = {"body": _right_size_wrong_content(spec)}
        http_server.serve(f"{spec.name}.gz", **route)
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        load_mnist(cache_dir=tmp_path, mirrors=[http_server.url], timeout=SHORT, pip_download=no_pip, progress=False)
    message = str(info.value)
    mirror_line = next(line for line in message.splitlines() if line.startswith(f"  - mirror {http_server.url}: "))
    assert fragment in mirror_line, message
    assert files_under(tmp_path) == []  # no partial, corrupt or temporary file in the cache
    assert time.monotonic() - start < LATE  # the slow mirror was given up on before it answered
    reliability("data sources", "a mirror serving wrong content, not gzip, 404, a body cut short, or nothing in time", 1,
                "the mirror named with the reason; nothing written to the cache; the slow one given up on in time")


def test_corrupt_file_is_named_among_good_answers(http_server, tmp_path: Path, no_pip: Callable) -> None:
    http_server.serve("t10k-labels-idx1-ubyte.gz", body=_right_size_wrong_content(TRAIN_LABELS))
    with pytest.raises(DataError) as info:
        load_mnist(cache_dir=tmp_path, mirrors=[http_server.url], timeout=SHORT, pip_download=no_pip, progress=False)
    line = next(line for line in str(info.value).splitlines() if "mirror" in line)
    assert "train-images-idx3-ubyte.gz: HTTP 404 Not Found" in line
    assert "t10k-labels-idx1-ubyte.gz: larger than the expected 10008 bytes" in line


def test_down_mirror_is_skipped_after_first_failure(
    http_server, second_http_server, refused_url: str, tmp_path: Path, no_pip: Callable
) -> None:
    # The slow host costs one timeout, not one per file; the next mirror is still asked for every file.
    for spec in MNIST_FILES:
        http_server.serve(f"{spec.name}.gz", body=b"late", delay=LATE)
    with pytest.raises(DataError) as info:
        load_mnist(
            cache_dir=tmp_path,
            mirrors=[refused_url, http_server.url, second_http_server.url],
            timeout=SHORT,
            pip_download=no_pip,
            progress=False,
        )
    # one timeout, not one per file: the slow host was asked once (a wall-clock bound would be one machine's)
    assert len(http_server.requests) == 1
    assert sorted(second_http_server.requests) == sorted(f"{spec.name}.gz" for spec in MNIST_FILES)
    message = str(info.value)
    assert f"mirror {refused_url}: unreachable: connection refused" in message
    assert f"mirror {http_server.url}: unreachable: no answer within" in message
    assert f"mirror {second_http_server.url}: HTTP 404 Not Found (all 4 files)" in message
