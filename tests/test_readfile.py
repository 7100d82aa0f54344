"""Reading a file a user named: only a regular file, never more than the limit and a byte."""

import os

import pytest

from cnnlab.readfile import FileRefused, FileTooLarge, NotAFile, read_bounded


def test_a_regular_file_is_read_whole_up_to_the_limit(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 100)
    assert read_bounded(path, 100) == b"x" * 100
    with pytest.raises(FileTooLarge, match="100 bytes is over the limit of 99"):
        read_bounded(path, 99)


def test_hostile_paths_are_refused_without_blocking_or_reading_them_whole(tmp_path, reliability):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero.png").symlink_to("/dev/zero")  # stat() gives 0 bytes; reading it never ends
    (tmp_path / "fifo.png").symlink_to(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    cases = {
        "/dev/zero": "is a device",
        tmp_path / "zero.png": "is a device",
        tmp_path / "fifo": "is a named pipe",
        tmp_path / "fifo.png": "is a named pipe",
        tmp_path / "dir": "is a directory",
        tmp_path / "missing": r"cannot read \(No such file or directory\)",
    }
    for path, words in cases.items():
        with pytest.raises(FileRefused, match=words):
            read_bounded(path, 1000)
    reliability("files a user names", "/dev/zero, a .png linked to it, a named pipe and a link to one, a directory, a "
                "missing file, each read with a limit", len(cases), "one FileRefused naming what the path is; "
                "nothing blocks, nothing is read past the limit")


def test_a_pipe_with_a_writer_is_still_refused_and_its_writer_not_drained(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer holding the pipe open, with data waiting
    os.write(fd, b"data")
    try:
        with pytest.raises(NotAFile, match="named pipe"):
            read_bounded(fifo, 10)
        assert os.read(fd, 10) == b"data"  # the pipe was never read
    finally:
        os.close(fd)
