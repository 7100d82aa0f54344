"""Read and write the IDX format of the MNIST files.

Layout: two zero bytes, a type code, the number of dimensions, then each dimension as a big-endian uint32, then
the data in C order, big-endian. MNIST only uses uint8 (code 0x08); the other codes are here so a file of another
type is described rather than misread.
"""

from __future__ import annotations

import struct

import numpy as np

from cnnlab.data.errors import DataError

# Type code -> big-endian NumPy dtype, from the format's definition.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}


def parse_idx(data: bytes | bytearray | memoryview, name: str) -> np.ndarray:
    """Decode IDX bytes into an array, without copying the payload.

    Args:
        data: the whole decompressed file. Pass a ``bytearray`` to get a writable array (torch.from_numpy then
            shares it without a warning).
        name: file name used in error messages.

    Raises:
        DataError: bad magic, unknown type code, or a size that disagrees with the header.
    """
    if len(data) < 4:
        raise DataError(f"{name}: not an IDX file ({len(data)} bytes, shorter than the 4-byte magic)")
    zero0, zero1, code, ndim = bytes(data[:4])
    if zero0 != 0 or zero1 != 0 or code not in IDX_DTYPES:
        raise DataError(f"{name}: not an IDX file (magic {bytes(data[:4]).hex()}, expected 0000 + type + ndim)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes, header needs {header})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        kind = "truncated" if len(data) - header < expected else "trailing bytes"
        raise DataError(f"{name}: {kind}: header {shape} needs {expected} data bytes, file has {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def encode_idx(array: np.ndarray) -> bytes:
    """Encode an array as IDX bytes (the inverse of :func:`parse_idx`).

    Raises:
        ValueError: a dtype IDX cannot hold, or more than 255 dimensions.
    """
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        supported = ", ".join(str(dtype.newbyteorder("=")) for dtype in IDX_DTYPES.values())
        raise ValueError(f"IDX cannot store dtype {array.dtype}; supported: {supported}")
    if array.ndim > 255:
        raise ValueError(f"IDX stores at most 255 dimensions, got {array.ndim}")
    code = _CODES[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
