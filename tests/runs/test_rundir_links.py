"""No directory cnnlab writes in, clears or removes is followed through a symbolic link: a link planted for a run
name, for a run's tensorboard/, or at the name a timestamped run would take never makes cnnlab write into, or
delete from, the directory it points to. Each refusal is one line and a non-zero exit; the target stays
byte-identical (every file's hash and every name, hidden ones included)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from cnnlab.atomic import UnsafeDirectory
from cnnlab.cli import main
from cnnlab.runs.rundir import clear_unstarted, remove_partial_writes, remove_unstarted

# The command-line cases load the real MNIST (cached) and train basic_cnn for 5 steps: marked slow.


def _victim(root: Path) -> Path:
    """Someone's directory: files with a run's names, a hidden .tmp file, and a sub-folder."""
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"mine": true}\n')
    (root / "metrics.csv").write_text("my,own,table\n1,2,3\n")
    (root / "best.pt").write_bytes(os.urandom(256))
    (root / ".notes.tmp").write_text("half a thought")
    (root / ".config.json.abc123.tmp").write_text("looks like a partial write, is not cnnlab's")
    (root / "tensorboard").mkdir()
    (root / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"my events")
    return root


def _snapshot(root: Path) -> dict[str, str]:
    """Every name under `root` (links not followed) with its content's SHA-256, or what it is."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                seen[rel] = "link -> " + os.readlink(p)
            elif p.is_dir():
                seen[rel] = "dir"
            else:
                seen[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return seen


def _train(runs: Path, *extra: str) -> list[str]:
    return ["train", "--model", "basic_cnn", "--steps", "5", "--out", str(runs), "--no-progress", "--device", "cpu",
            *extra]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnlab train: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.real_data  # cnnlab train on MNIST
@pytest.mark.parametrize("kind", ["someone's folder", "a stopped run", "a finished run", "a dangling link"])
def test_a_run_name_that_is_a_link_is_refused_and_its_target_untouched(kind, tmp_path, capsys, reliability):
    victim = tmp_path / "victim"
    if kind != "a dangling link":
        _victim(victim)
        if kind == "a stopped run":
            (victim / "last.pt").write_bytes(b"not really a checkpoint")
        if kind == "a finished run":
            (victim / "summary.json").write_text("{}\n")
    before = _snapshot(victim) if victim.exists() else None
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "evil").symlink_to(victim, target_is_directory=True)
    assert main(_train(runs, "--run-name", "evil")) == 1
    line = _one_error_line(capsys)
    assert line.endswith(f"{runs / 'evil'} is a symbolic link; cnnlab never writes through one: remove it or "
                         "choose another --run-name"), line
    assert (runs / "evil").is_symlink() and sorted(p.name for p in runs.iterdir()) == ["evil"]
    if before is None:
        assert not victim.exists()
    else:
        assert _snapshot(victim) == before
    reliability("symbolic links where cnnlab writes", f"runs/NAME a link to {kind}; cnnlab train --run-name NAME", 1,
                "one line naming the link and the way out; exit 1; the target byte-identical, .notes.tmp kept")


@pytest.mark.real_data  # cnnlab train on MNIST
def test_a_runs_tensorboard_folder_that_is_a_link_is_refused_new_stopped_or_resumed(tmp_path, capsys, reliability):
    victim = _victim(tmp_path / "victim")
    before = _snapshot(victim)
    runs = tmp_path / "runs"

    # A new named run in a directory that holds a planted tensorboard/ link.
    (runs / "tb").mkdir(parents=True)
    (runs / "tb" / "tensorboard").symlink_to(victim, target_is_directory=True)
    assert main(_train(runs, "--run-name", "tb", "--tensorboard")) == 1
    line = _one_error_line(capsys)
    assert line.endswith(f"{runs / 'tb' / 'tensorboard'} is a symbolic link; cnnlab never writes through one: remove "
                         "it or choose another --run-name"), line
    assert sorted(p.name for p in (runs / "tb").iterdir()) == ["tensorboard"]  # not even a .lock was made

    # A real run, stopped (its summary.json gone), whose tensorboard/ is then made a link: neither continuing it by
    # name nor --resume writes through it.
    assert main(_train(runs, "--run-name", "real", "--tensorboard")) == 0
    capsys.readouterr()
    real = runs / "real"
    (real / "summary.json").unlink()
    for f in (real / "tensorboard").iterdir():
        f.unlink()
    (real / "tensorboard").rmdir()
    (real / "tensorboard").symlink_to(victim, target_is_directory=True)
    run_before = _snapshot(real)
    assert main(_train(runs, "--run-name", "real", "--tensorboard")) == 1
    assert "real/tensorboard is a symbolic link; cnnlab never writes through one" in _one_error_line(capsys)
    assert main(["train", "--resume", str(real), "--no-progress"]) == 1
    assert "real/tensorboard is a symbolic link; cnnlab never writes through one" in _one_error_line(capsys)
    assert _snapshot(real) == run_before and _snapshot(victim) == before
    reliability("symbolic links where cnnlab writes", "RUN/tensorboard a link to someone's folder: a new named run, the "
                "same name continued, --resume", 3, "one line naming the link; exit 1; the target and the run unchanged")


@pytest.mark.real_data  # cnnlab train on MNIST
def test_resume_through_a_link_to_a_run_is_refused_and_the_run_unchanged(tmp_path, capsys, reliability):
    runs = tmp_path / "runs"
    assert main(_train(runs, "--run-name", "real")) == 0
    (runs / "real" / "summary.json").unlink()  # stopped: --resume would train it
    capsys.readouterr()
    before = _snapshot(runs / "real")
    (tmp_path / "alias").symlink_to(runs / "real", target_is_directory=True)
    assert main(["train", "--resume", str(tmp_path / "alias"), "--no-progress"]) == 1
    line = _one_error_line(capsys)
    assert line.endswith(f"{tmp_path / 'alias'} is a symbolic link; cnnlab never writes through one: remove it or "
                         "choose another run directory"), line
    assert _snapshot(runs / "real") == before
    reliability("symbolic links where cnnlab writes", "cnnlab train --resume LINK, a link to a stopped run", 1,
                "one line naming the link; exit 1; the run unchanged")


@pytest.mark.real_data  # cnnlab train on MNIST
def test_a_link_at_the_name_a_timestamped_run_takes_is_passed_by_not_followed(tmp_path, capsys, reliability):
    victim = _victim(tmp_path / "victim")
    before = _snapshot(victim)
    runs = tmp_path / "runs"
    runs.mkdir()
    # Links at every name the run could take in the next two minutes (it reads MNIST before making its directory).
    now = time.time()
    planted = [runs / f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now + s))}-basic_cnn" for s in range(-1, 120)]
    for link in planted:
        link.symlink_to(victim, target_is_directory=True)
    assert main(_train(runs)) == 0
    made = [p for p in runs.iterdir() if not p.is_symlink()]
    assert len(made) == 1 and made[0].name.endswith("-basic_cnn-1"), made  # the next name beside a taken one
    assert (made[0] / "config.json").is_file() and (made[0] / "best.pt").is_file()
    assert all(link.is_symlink() for link in planted)
    assert _snapshot(victim) == before
    reliability("symbolic links where cnnlab writes", "links at the names a timestamped run directory would take", 1,
                "the run takes the next free name (-1); every link and its target unchanged")


@pytest.mark.parametrize("clean", [remove_partial_writes, clear_unstarted])
def test_clearing_a_run_directory_that_is_a_link_is_refused_and_its_target_untouched(clean, tmp_path, reliability):
    victim = _victim(tmp_path / "victim")
    before = _snapshot(victim)
    (tmp_path / "run").symlink_to(victim, target_is_directory=True)
    with pytest.raises(UnsafeDirectory, match="run is a symbolic link; cnnlab never writes through one"):
        clean(tmp_path / "run")
    assert remove_unstarted(tmp_path / "run") is False
    assert _snapshot(victim) == before and (tmp_path / "run").is_symlink()
    reliability("symbolic links where cnnlab writes", f"rundir.{clean.__name__} and remove_unstarted given a link to "
                "someone's folder (a .notes.tmp and a .config.json.abc123.tmp in it)", 2,
                "UnsafeDirectory naming the link, or nothing removed; the target byte-identical")


def test_a_run_directory_clears_only_its_own_partial_writes(tmp_path):
    run = _victim(tmp_path / "run")  # as if a run had written in it: its own files beside someone's
    (run / ".last.pt.x9y8z7.tmp").write_bytes(b"half a checkpoint")
    (run / ".last.prev.pt.link.tmp").write_bytes(b"a link being made")
    (run / "tensorboard").rename(tmp_path / "kept")  # a real tensorboard/ of the run's: removed with the run
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.2.host").write_bytes(b"the run's events")
    remove_partial_writes(run)
    names = sorted(p.name for p in run.iterdir())
    assert ".last.pt.x9y8z7.tmp" not in names and ".last.prev.pt.link.tmp" not in names
    assert ".notes.tmp" in names  # not a partial write of a run's file: someone's, kept
    assert ".config.json.abc123.tmp" not in names  # a partial write of config.json (the run's own name): removed
    assert remove_unstarted(run) is False  # someone's files keep the directory
    assert sorted(p.name for p in run.iterdir()) == [".notes.tmp"]


@pytest.mark.real_data  # cnnlab train on MNIST
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a folder away")
def test_a_run_name_whose_directory_another_user_owns_is_refused(tmp_path, capsys, reliability):
    runs = tmp_path / "runs"
    (runs / "theirs").mkdir(parents=True)
    os.chown(runs / "theirs", 65534, 65534)  # nobody's
    assert main(_train(runs, "--run-name", "theirs")) == 1
    line = _one_error_line(capsys)
    assert f"{runs / 'theirs'} belongs to another user (uid 65534)" in line and line.endswith("choose another --run-name")
    assert list((runs / "theirs").iterdir()) == []
    reliability("symbolic links where cnnlab writes", "--run-name NAME where runs/NAME is another user's directory "
                "(its owner could swap it for a link mid-run)", 1, "one line naming the owner; exit 1; nothing written in it")
