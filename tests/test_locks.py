"""Lock files planted as links: in a run directory or a shared data cache, a .lock made a link to someone's file
must not make cnnlab truncate that file and write its pid into it."""

import os

import pytest

from cnnlab.cli import main
from cnnlab.data import DataError
from cnnlab.data.fetch.idx_sources import fetch_lock
from cnnlab.locks import FileLock, UnsafeLockFile
from cnnlab.train import fit, make_config


def _victim(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's thesis\n")
    return victim


def test_a_lock_file_that_is_a_symbolic_link_is_refused_and_its_target_untouched(tmp_path):
    victim = _victim(tmp_path)
    (tmp_path / ".lock").symlink_to(victim)
    with pytest.raises(UnsafeLockFile, match="is a symbolic link, not a lock file"):
        FileLock(tmp_path / ".lock").acquire(blocking=False)
    assert victim.read_text() == "someone's thesis\n"
    assert (tmp_path / ".lock").is_symlink()  # left alone: the user decides what to remove


def test_a_lock_file_with_another_name_is_refused(tmp_path):
    victim = _victim(tmp_path)
    os.link(victim, tmp_path / ".lock")  # a hard link is the same file under two names
    with pytest.raises(UnsafeLockFile, match="has other names"):
        FileLock(tmp_path / ".lock").acquire(blocking=False)
    assert victim.read_text() == "someone's thesis\n"


def test_a_plain_lock_still_works_and_names_its_holder(tmp_path):
    first, second = FileLock(tmp_path / ".lock"), FileLock(tmp_path / ".lock")
    assert first.acquire(blocking=False)
    try:
        assert not second.acquire(blocking=False)  # flock is per open file: a second open in one process is refused too
        assert second.holder() == f"process {os.getpid()}"
    finally:
        first.release()
    assert second.acquire(blocking=False)
    second.release()


def test_a_holder_read_through_a_link_to_a_device_ends_at_once(tmp_path):
    (tmp_path / ".lock").symlink_to("/dev/zero")
    assert FileLock(tmp_path / ".lock").holder() == "another process"


def test_a_linked_lock_in_the_data_cache_is_one_data_error(tmp_path):
    victim = _victim(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".lock").symlink_to(victim)
    with pytest.raises(DataError, match=r"cache .*\.lock is a symbolic link"):
        with fetch_lock(cache, progress=False):
            pass
    assert victim.read_text() == "someone's thesis\n"


def test_resume_with_a_linked_lock_is_one_line_and_the_target_untouched(tiny_mnist, tmp_path, capsys, reliability):
    run = fit(make_config("basic_cnn", epochs=1, batch_size=100, val_size=100, device="cpu"), tiny_mnist,
              tmp_path / "runs", progress=False).run_dir
    (run / "summary.json").unlink()  # a stopped run, which --resume continues
    (run / ".lock").unlink()
    victim = _victim(tmp_path)
    (run / ".lock").symlink_to(victim)
    code = main(["train", "--resume", str(run)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.splitlines()[0] == (f"cnnlab train: error: {run / '.lock'} is a symbolic link, not a lock file; it was "
                                   "left alone (remove the link to go on)")
    assert victim.read_text() == "someone's thesis\n"
    reliability("symbolic links where cnnlab writes", "a run directory's .lock, and a data cache's, made a link to "
                "another file (also: a hard link; a link to /dev/zero read for the holder's name)", 2,
                "one line naming the link, exit 1; the file it points to unchanged, the link left in place")
