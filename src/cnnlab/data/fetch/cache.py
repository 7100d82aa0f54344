"""Where downloaded data lives, and how it gets there without ever leaving a half-written file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cnnlab.atomic import atomic_writer
from cnnlab.data.errors import DataError

CACHE_ENV = "CNNLAB_CACHE"


def default_cache_dir() -> Path:
    """``$CNNLAB_CACHE`` if set, else ``~/.cache/cnnlab``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "cnnlab"


def atomic_write(path: Path, data: bytes | bytearray | memoryview, expected_sha256: str | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one.

    The bytes go to a temporary file in the same directory (os.replace is only atomic within one file system),
    are flushed to disk, optionally re-read and hashed, and only then renamed over ``path``.

    Args:
        path: final location; its directory is created if missing.
        data: the full content.
        expected_sha256: if given, the written file is read back and must have this hash (catches a full or
            failing disk that truncated the write).

    Raises:
        DataError: the directory is not writable, or the written copy does not match.
    """
    path = Path(path)

    def check(tmp: Path) -> None:
        if expected_sha256 is not None and hashlib.sha256(tmp.read_bytes()).hexdigest() != expected_sha256:
            raise DataError(f"{path}: written copy does not match its SHA-256 (disk full or failing?)")

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0o644: cached data is public and may be shared through CNNLAB_CACHE.
        with atomic_writer(path, "wb", perms=0o644, verify=check) as f:
            f.write(data)
    except OSError as err:
        reason = err.strerror or err
        raise DataError(f"cannot write {path}: {reason} (set {CACHE_ENV} to a writable directory)") from None
