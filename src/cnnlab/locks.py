"""Advisory file locks (flock) between processes: one run per run directory, one fetch per data cache.

The operating system drops a lock when its process ends, however it ends (kill -9 included), so a lock
never outlives its holder and there is nothing to clean up. Where flock does not exist (not POSIX) the
lock is a no-op: cnnlab then runs as before, without this protection.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from cnnlab.errors import CnnlabError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class UnsafeLockFile(CnnlabError, OSError):
    """The lock's path is a symbolic link, a file with other names (hard links) or not a file: opening it
    would lock, and write to, something else. It is left as it is; the message says what to remove."""

    def __str__(self) -> str:
        return str(self.strerror)  # the sentence alone, without OSError's "[Errno 40]"


class FileLock:
    """An exclusive lock on `path` (created if missing); the holder writes its pid into the file.

    The file is opened without following a symbolic link, and refused if it has other names: in a directory
    others can write to (a shared cache, a lab server), a .lock made a link to someone's file would otherwise
    be truncated and overwritten with a pid.
    """

    def __init__(self, path: str | Path, dir_fd: int | None = None) -> None:
        """`dir_fd`: a descriptor of the directory that holds `path` (atomic.open_directory); the lock file is then
        opened by its name in that very directory, even if a link has been swapped in for the directory's path."""
        self.path = Path(path)
        self._dir_fd = dir_fd
        self._file = None

    def _os_open(self, flags: int, mode: int = 0o777) -> int:
        if self._dir_fd is None:
            return os.open(self.path, flags, mode)
        return os.open(self.path.name, flags, mode, dir_fd=self._dir_fd)

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; with blocking=False return False at once if another process holds it.

        Raises UnsafeLockFile for a link or anything but a plain file at `path`, and OSError when the lock
        file cannot be created (a read-only directory, say)."""
        f = self._open()
        if fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                f.close()
                return False
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}\n")
        f.flush()
        self._file = f
        return True

    def _open(self):
        flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = self._os_open(flags, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
                raise UnsafeLockFile(e.errno, f"{self.path} is a symbolic link, not a lock file; it was left alone "
                                     "(remove the link to go on)") from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            os.close(fd)
            what = "is not a plain file" if not stat.S_ISREG(st.st_mode) else "has other names (hard links)"
            raise UnsafeLockFile(errno.EPERM, f"{self.path} {what}, so it is not used as a lock file; it was left "
                                 "alone (remove it to go on)")
        return os.fdopen(fd, "r+")

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it ('process 1234'), or 'another process'."""
        try:
            flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            with os.fdopen(self._os_open(flags), "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    return "another process"
                text = f.read(100).decode("utf-8", "replace").strip()  # a pid line; nothing else is shown
        except OSError:
            return "another process"
        return text.splitlines()[0] if text else "another process"

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the flock
            self._file = None
