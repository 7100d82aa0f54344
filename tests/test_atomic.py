import pytest

from cnnlab.atomic import atomic_writer


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
