"""Advisory file locks (flock) between processes: one run per run directory, one fetch per data cache.

The operating system drops a lock when its process ends, however it ends (kill -9 included), so a lock
never outlives its holder and there is nothing to clean up. Where flock does not exist (not POSIX) the
lock is a no-op: cnnlab then runs as before, without this protection.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class FileLock:
    """An exclusive lock on `path` (created if missing); the holder writes its pid into the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; with blocking=False return False at once if another process holds it.

        Raises OSError when the lock file cannot be created (a read-only directory, say)."""
        f = open(self.path, "a+")
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

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it ('process 1234'), or 'another process'."""
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the flock
            self._file = None
