"""IDX encoding and decoding, including the ways a file can be broken."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.data import DataError
from cnnlab.data.fetch.idx import encode_idx, parse_idx


@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([0, 9, 255], dtype=np.uint8),
        np.array([-128, 0, 127], dtype=np.int8),
        np.array([[-1, 300], [7, -32768]], dtype=np.int16),
        np.array([1, -2, 2**31 - 1], dtype=np.int32),
        np.array([0.5, -1.25, 3e38], dtype=np.float32),
        np.array([[1e-300, -2.5]], dtype=np.float64),
        np.zeros((0, 28, 28), dtype=np.uint8),
    ],
    ids=lambda a: f"{a.dtype}{a.shape}",
)
def test_round_trip(array: np.ndarray) -> None:
    back = parse_idx(encode_idx(array), "x")
    assert back.shape == array.shape
    assert back.dtype.newbyteorder("=") == array.dtype
    np.testing.assert_array_equal(back, array)


def test_encoding_matches_the_mnist_layout() -> None:
    # Magic 0x00000803 then big-endian dims, then the bytes: what the official image files start with.
    data = encode_idx(np.array([[[1, 2], [3, 4]]], dtype=np.uint8))
    assert data == bytes.fromhex("00000803" "00000001" "00000002" "00000002" "01020304")
    assert encode_idx(np.array([7, 8], dtype=np.uint8)) == bytes.fromhex("00000801" "00000002" "0708")


def test_big_endian_payload() -> None:
    assert encode_idx(np.array([1], dtype=np.int32))[-4:] == b"\x00\x00\x00\x01"


def test_parse_of_bytearray_is_writable_and_shares_memory() -> None:
    buf = bytearray(encode_idx(np.zeros((2, 2), dtype=np.uint8)))
    array = parse_idx(buf, "x")
    assert array.flags.writeable
    buf[-1] = 5
    assert array[1, 1] == 5


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "shorter than the 4-byte magic"),
        (b"\x00\x00\x08", "shorter than the 4-byte magic"),
        (bytes.fromhex("01000801") + b"\x00\x00\x00\x01" + b"\x07", "not an IDX file"),
        (bytes.fromhex("00000701") + b"\x00\x00\x00\x01" + b"\x07", "not an IDX file"),  # unknown type code
        (bytes.fromhex("00000803") + b"\x00\x00\x00\x01", "truncated IDX header"),
        (bytes.fromhex("00000801") + b"\x00\x00\x00\x03" + b"\x01\x02", "truncated"),
        (bytes.fromhex("00000801") + b"\x00\x00\x00\x01" + b"\x01\x02", "trailing bytes"),
    ],
    ids=["empty", "short-magic", "bad-magic", "bad-type", "short-header", "truncated-data", "trailing-data"],
)
def test_malformed_idx_names_the_file(data: bytes, fragment: str, reliability) -> None:
    with pytest.raises(DataError, match=fragment) as info:
        parse_idx(data, "train-labels-idx1-ubyte")
    assert str(info.value).startswith("train-labels-idx1-ubyte: ")
    reliability("data files", "malformed IDX: empty, short or bad magic, unknown type, short header, truncated, trailing bytes",
                1, "one DataError naming the file and the fault")


def test_truncated_real_sized_header() -> None:
    full = encode_idx(np.zeros((10, 28, 28), dtype=np.uint8))
    with pytest.raises(DataError, match=r"header \(10, 28, 28\) needs 7840 data bytes, file has 7839"):
        parse_idx(full[:-1], "t10k-images-idx3-ubyte")


def test_encode_refuses_what_idx_cannot_hold() -> None:
    with pytest.raises(ValueError, match="int64"):
        encode_idx(np.zeros(3, dtype=np.int64))
