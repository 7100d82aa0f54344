"""Reading a file a user named: a regular file, and at most so many bytes of it.

A size from stat() says nothing about a device or a pipe (/dev/zero is 0 bytes and never ends), and a path
checked before it is opened may be another file once opened (a link swapped in between). So the path is
checked, then opened without blocking (a named pipe with no writer would hang a blocking open), and the
descriptor itself is checked again; then at most `limit + 1` bytes are read, which is all it takes to know
that a file is over the limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO


class FileRefused(Exception):
    """A path that cannot be read as a file; the message says why (not which path: the caller names it)."""


class NotAFile(FileRefused):
    """The path is a directory, a named pipe, a socket or a device."""


class FileTooLarge(FileRefused):
    """More bytes than the caller's limit."""

    def __init__(self, size: int, limit: int, known: bool = True) -> None:
        self.size, self.limit, self.known = size, limit, known  # known: the file's size, not just a lower bound
        super().__init__(f"{size:,} bytes is over the limit of {limit:,}" if known else f"more than the limit of {limit:,} bytes")


def kind_of_file(mode: int) -> str:
    """What a path that is not a regular file is, in words ('a directory', 'a named pipe', ...)."""
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def open_regular(path: str | Path) -> BinaryIO:
    """`path` opened for reading, if it is a regular file (a link to one counts).

    Raises:
        NotAFile: a directory, named pipe, socket or device; one is refused before it is opened where the
            path already says so (opening a device can have effects of its own), and after, on the descriptor.
        FileRefused: missing, or cannot be opened (permissions, a dangling link, ...).
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise FileRefused(f"cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise NotAFile(f"is {kind_of_file(st.st_mode)}")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise FileRefused(f"cannot read ({e.strerror or e})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # replaced between the two looks
            raise NotAFile(f"is {kind_of_file(mode)}")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: str | Path, limit: int) -> bytes:
    """The whole content of the regular file `path`, if it is at most `limit` bytes.

    Raises:
        NotAFile, FileRefused: see `open_regular`; also a read that fails midway.
        FileTooLarge: over `limit` bytes (found from its size, or from reading one byte more).
    """
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise FileTooLarge(size, limit)
        try:
            data = f.read(limit + 1)  # a file that grew since fstat still costs at most this
        except OSError as e:
            raise FileRefused(f"cannot read ({e.strerror or e})") from None
    if len(data) > limit:
        raise FileTooLarge(len(data), limit, known=False)
    return data
