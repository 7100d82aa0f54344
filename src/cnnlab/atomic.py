"""Atomic file writes: readers see the old file or the complete new one, never half of either.

Every file cnnlab writes (checkpoints, run records, figures, exports, saved inputs) goes through `atomic_writer`.
It never writes through a symbolic link: the temporary file is created anew (O_CREAT | O_EXCL, and O_NOFOLLOW),
and the rename replaces a link at the destination with the file itself, so a link planted where a figure goes
cannot make cnnlab overwrite the file it points to. A failed write (a full disk, a read-only directory) leaves
the previous file as it was, no temporary file, and one WriteError that names the file.

Directories that cnnlab names itself (a run's directory, RUN/tensorboard) are not followed through a link either:
`make_directory` and `open_directory` refuse one (UnsafeDirectory), and a directory held open by its descriptor
(`open_directory`) stays the one that was checked, whatever is later put at its path. A directory the user names
(the runs root, --out) is the user's choice, and may be a link.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

from cnnlab.errors import CnnlabError


class WriteError(CnnlabError, OSError):
    """A file that could not be written (the previous one, if any, is intact): the path and the system's reason."""

    def __init__(self, path: str | Path, err: OSError) -> None:
        super().__init__(err.errno, err.strerror or str(err) or type(err).__name__, str(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename} ({self.strerror})"


class UnsafeDirectory(WriteError):
    """A directory cnnlab would make, write in, clear or remove that is a symbolic link, not a directory, or not
    one it may use: refused, and left as it is. The message is one sentence: the path, what it is, what to do."""

    def __init__(self, path: str | Path, sentence: str) -> None:
        OSError.__init__(self, errno.EPERM, sentence, str(path))

    def __str__(self) -> str:
        return str(self.strerror)


_DIR_FLAGS = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
              | getattr(os, "O_CLOEXEC", 0))


def open_directory(path: str | Path, advice: str = "remove it", dir_fd: int | None = None) -> int:
    """A descriptor of the directory at `path` itself, never of what a symbolic link there points to. Work done
    through it (os.open, os.unlink, os.scandir with dir_fd) stays in that directory even if its path is later
    swapped for a link. The caller closes it. `advice` ends the refusal: what the user can do. With `dir_fd`,
    `path` is a name in the directory that descriptor holds.

    Raises:
        UnsafeDirectory: `path` is a symbolic link, or not a directory.
        FileNotFoundError: nothing is there.
        WriteError: it cannot be opened (permissions, ...).
    """
    try:
        fd = os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as e:
        try:
            mode = os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError:
            mode = 0
        if stat.S_ISLNK(mode):  # O_NOFOLLOW met a link: ELOOP, or ENOTDIR beside O_DIRECTORY (Linux)
            raise UnsafeDirectory(path, f"{path} is a symbolic link; cnnlab never writes through one: {advice}") \
                from None
        if e.errno == errno.ENOTDIR or (mode and not stat.S_ISDIR(mode)):
            raise UnsafeDirectory(path, f"{path} is not a directory: {advice}") from None
        raise WriteError(path, e) from None
    if not stat.S_ISDIR(os.fstat(fd).st_mode):  # where O_DIRECTORY does not exist
        os.close(fd)
        raise UnsafeDirectory(path, f"{path} is not a directory: {advice}")
    return fd


def make_directory(path: str | Path, advice: str = "remove it") -> Path:
    """`path`, made if missing, once it is checked to be a directory itself and not a symbolic link to one
    (`open_directory`). Its parent is made too if missing, and may be a link: it is what the user named.

    Raises:
        UnsafeDirectory: see `open_directory`.
        WriteError: it cannot be made.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(path.parent, e) from None
    try:
        os.mkdir(path)  # never follows a link at `path`: one there is "exists", and is then refused below
    except FileExistsError:
        pass
    except OSError as e:
        raise WriteError(path, e) from None
    os.close(open_directory(path, advice))
    return path


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
