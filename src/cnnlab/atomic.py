"""Atomic file writes: readers see the old file or the complete new one, never half of either."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator


@contextmanager
def atomic_writer(
    path: str | Path, mode: str = "wb", perms: int | None = None, verify: Callable[[Path], None] | None = None
) -> Iterator[IO]:
    """Open a temporary file beside `path`; on a clean exit flush it to disk and rename it over `path`.

    On any exception (a full disk, an interrupt) the temporary file is removed and `path` is untouched.
    The temporary file is in the same directory because os.replace is atomic only within one file system.

    Args:
        path: the final location; its directory must exist.
        mode: "wb" or "w".
        perms: chmod the file to this before the rename (mkstemp creates it private, 0o600).
        verify: called with the temporary file's path once it is on disk; raising stops the rename.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if perms is not None:
            tmp.chmod(perms)
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
