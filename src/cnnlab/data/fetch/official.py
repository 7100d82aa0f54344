"""The official MNIST files: names, sizes, SHA-256. The single place where "this is real MNIST" is decided."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cnnlab.data.errors import DataError


@dataclass(frozen=True)
class OfficialFile:
    """One decompressed IDX file of the official MNIST distribution.

    Args:
        name: file name as LeCun published it, without ``.gz``.
        sha256: hex SHA-256 of the decompressed file.
        shape: array shape stored in the IDX header.
    """

    name: str
    sha256: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Exact byte size: 4-byte magic, 4 bytes per dimension, then one uint8 per element."""
        count = 1
        for dim in self.shape:
            count *= dim
        return 4 + 4 * len(self.shape) + count


TRAIN_IMAGES = OfficialFile(
    "train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", (60000, 28, 28)
)
TRAIN_LABELS = OfficialFile(
    "train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", (60000,)
)
TEST_IMAGES = OfficialFile(
    "t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", (10000, 28, 28)
)
TEST_LABELS = OfficialFile(
    "t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", (10000,)
)
MNIST_FILES: tuple[OfficialFile, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def check_official(spec: OfficialFile, data: bytes | bytearray | memoryview, origin: str) -> None:
    """Raise DataError unless ``data`` is exactly the official ``spec`` file.

    Args:
        spec: the file it should be.
        data: decompressed bytes.
        origin: what to call the data in the message (a path or URL), so the user knows which copy is bad.
    """
    # Size first: it is free and tells "truncated" apart from "different file" in the message.
    if len(data) != spec.size:
        raise DataError(f"{origin}: {len(data)} bytes, expected {spec.size} (truncated or not {spec.name})")
    if sha256_hex(data) != spec.sha256:
        raise DataError(f"{origin}: SHA-256 mismatch (corrupt, or not the official {spec.name})")
