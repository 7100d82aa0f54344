"""Atomic file writes: readers see the old file or the complete new one, never half of either.

Every file cnnlab writes (checkpoints, run records, figures, exports, saved inputs) goes through `atomic_writer`.
It never writes through a symbolic link: the temporary file is created anew (O_CREAT | O_EXCL, and O_NOFOLLOW),
and the rename replaces a link at the destination with the file itself, so a link planted where a figure goes
cannot make cnnlab overwrite the file it points to. A failed write (a full disk, a read-only directory) leaves
the previous file as it was, no temporary file, and one WriteError that names the file.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator


class WriteError(OSError):
    """A file that could not be written (the previous one, if any, is intact): the path and the system's reason."""

    def __init__(self, path: str | Path, err: OSError) -> None:
        super().__init__(err.errno, err.strerror or str(err) or type(err).__name__, str(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename} ({self.strerror})"


@contextmanager
def atomic_writer(
    path: str | Path, mode: str = "wb", perms: int | None = None, verify: Callable[[Path], None] | None = None
) -> Iterator[IO]:
    """Open a temporary file beside `path`; on a clean exit flush it to disk and rename it over `path`.

    On any exception (a full disk, an interrupt) the temporary file is removed and `path` is untouched; an
    OSError becomes a WriteError naming `path`. The temporary file is in the same directory because os.replace
    is atomic only within one file system. mkstemp opens it with O_EXCL and O_NOFOLLOW (Python adds both), so
    nothing already at its name, a link included, is ever written through.

    Args:
        path: the final location; its directory must exist. A symbolic link there is replaced, not followed.
        mode: "wb" or "w".
        perms: the file's mode; by default 0o666 less the umask, what `open(path, "w")` gives a new file
            (mkstemp alone would make every checkpoint and config private, 0o600, even on a shared server).
        verify: called with the temporary file's path once it is on disk; raising stops the rename.
    """
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteError(path, e) from None
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
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(path, e) from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> None:
    """Write `data` to `path` with `atomic_writer`. Serialisers whose own file writing fails inside C++ (torch.save,
    torch.jit.save: a RuntimeError, or an abort, on a full disk) write to memory first, then here, where a
    failure is an ordinary WriteError."""
    with atomic_writer(path) as f:
        f.write(data)


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
