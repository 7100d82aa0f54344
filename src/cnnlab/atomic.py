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
        perms: the file's mode; by default 0o666 less the umask, what `open(path, "w")` gives a new file
            (mkstemp alone would make every checkpoint and config private, 0o600, even on a shared server).
        verify: called with the temporary file's path once it is on disk; raising stops the rename.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as f:
            os.fchmod(f.fileno(), perms if perms is not None else 0o666 & ~current_umask())
            yield f
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def current_umask(status: str | Path = "/proc/self/status") -> int:
    """The process's umask, read from `status` where Linux shows it (since 4.7), else set and put back.

    Setting it to read it back changes the process-wide mask for a moment, and a file another thread creates
    in that moment gets the wrong mode; reading /proc changes nothing, so it comes first.
    """
    try:
        with open(status) as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # should another thread create a file in between, it errs on the private side
    os.umask(mask)
    return mask
