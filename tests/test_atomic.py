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


def test_a_symbolic_link_at_the_destination_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's thesis")
    (tmp_path / "confusion.png").symlink_to(victim)
    with atomic_writer(tmp_path / "confusion.png") as f:
        f.write(b"PNG bytes")
    assert victim.read_text() == "someone's thesis"
    assert not (tmp_path / "confusion.png").is_symlink() and (tmp_path / "confusion.png").read_bytes() == b"PNG bytes"


def test_a_link_planted_at_every_temporary_name_is_never_followed(tmp_path, monkeypatch):
    # Someone who guesses the temporary file's name and puts a link there first: mkstemp's O_EXCL | O_NOFOLLOW
    # makes it pick another name, so the link's target is not written either.
    import tempfile

    victim = tmp_path / "victim.txt"
    victim.write_text("someone's thesis")
    names = iter(["guess", "guess", "other"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)  # the standard library's name source
    (tmp_path / ".f.bin.guess.tmp").symlink_to(victim)
    with atomic_writer(tmp_path / "f.bin") as f:
        f.write(b"new")
    assert victim.read_text() == "someone's thesis" and (tmp_path / "f.bin").read_bytes() == b"new"


def test_a_failed_write_is_one_write_error_naming_the_file(tmp_path):
    from cnnlab.atomic import WriteError

    with pytest.raises(WriteError) as e:
        with atomic_writer(tmp_path / "missing-dir" / "f.bin") as f:
            f.write(b"x")
    assert str(e.value) == f"cannot write {tmp_path / 'missing-dir' / 'f.bin'} (No such file or directory)"
    assert isinstance(e.value, OSError) and e.value.strerror == "No such file or directory"


def test_metrics_rows_are_never_appended_through_a_link(tmp_path):
    from cnnlab.runs.rundir import append_metrics

    victim = tmp_path / "victim.csv"
    victim.write_text("someone's data\n")
    (tmp_path / "metrics.csv").symlink_to(victim)
    with pytest.raises(OSError):
        append_metrics(tmp_path / "metrics.csv", {"epoch": 1})
    assert victim.read_text() == "someone's data\n"
