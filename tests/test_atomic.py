import os
import stat
from pathlib import Path

import pytest
import torch

from cnnlab.atomic import atomic_writer, current_umask
from cnnlab.runs.checkpoint import save_checkpoint


def test_clean_exit_replaces_the_file(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with atomic_writer(path, "w", perms=0o644) as f:
        f.write("new")
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_failure_mid_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_writer(path) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_failed_verification_stops_the_rename(tmp_path):
    path = tmp_path / "f.bin"

    def refuse(tmp):
        assert tmp.read_bytes() == b"data"  # the check sees the complete temporary file
        raise ValueError("bad copy")

    with pytest.raises(ValueError):
        with atomic_writer(path, verify=refuse) as f:
            f.write(b"data")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=lambda m: f"umask{m:03o}")
def umask(request):
    """The process umask set for one test, then put back (it is process-wide)."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_new_file_gets_the_mode_a_plain_open_would(tmp_path, umask):
    # A run on a shared server is readable by the group and others exactly when the user's umask says so.
    with atomic_writer(tmp_path / "f.json", "w") as f:
        f.write("{}")
    with open(tmp_path / "plain.json", "w") as f:
        f.write("{}")
    assert _mode(tmp_path / "f.json") == 0o666 & ~umask == _mode(tmp_path / "plain.json")


def test_replacing_a_file_also_follows_the_umask(tmp_path, umask):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    path.chmod(0o600)
    with atomic_writer(path) as f:
        f.write(b"new")
    assert _mode(path) == 0o666 & ~umask


def test_explicit_perms_win_over_the_umask(tmp_path, umask):
    with atomic_writer(tmp_path / "f.txt", "w", perms=0o640) as f:
        f.write("x")
    assert _mode(tmp_path / "f.txt") == 0o640


def test_a_checkpoint_is_readable_exactly_as_the_umask_allows(tmp_path, umask):
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(2)}})
    assert _mode(path) == 0o666 & ~umask
    assert {0o022: 0o644, 0o077: 0o600, 0o002: 0o664}[umask] == _mode(path)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_umask_is_read_the_same_with_and_without_proc(tmp_path, umask):
    # Where /proc/self/status is missing (not Linux, an old kernel) the mask is set and put back instead.
    assert current_umask() == umask
    assert current_umask(tmp_path / "no-proc-status") == umask
    assert os.umask(umask) == umask  # and it was left as it was
