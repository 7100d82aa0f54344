"""What the file system can do to a command: a full disk, a read-only directory, links planted where cnnlab
writes, a device or a pipe where it reads. Each command gives one line and a non-zero exit, and keeps every
file it did not finish writing as it was.

The full and read-only disks are real: a small tmpfs mounted for the test (as root, as in CI; skipped where
mounting is not allowed) and always unmounted after it.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.cli import main

from .support.cli import run_cli


def _folder(root: Path) -> Path:
    """48 grey 16x16 pictures in two classes (bars and dots): the smallest image folder cnnlab trains on."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(0)
    for name in ("bar", "dot"):
        (root / name).mkdir(parents=True)
        for i in range(24):
            im = Image.new("L", (16, 16), 0)
            x = rng.randint(2, 10)
            shape = (x, 2, x + 2, 13) if name == "bar" else (x, x, x + 4, x + 4)
            (ImageDraw.Draw(im).rectangle if name == "bar" else ImageDraw.Draw(im).ellipse)(shape, fill=255)
            im.save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    """A basic_cnn run directory trained 2 epochs on `_folder` by `cnnlab train`."""
    root = tmp_path_factory.mktemp("hostile")
    folder = _folder(root / "folder")
    code = main(["train", "--model", "basic_cnn", "--dataset", f"imagefolder:{folder}", "--epochs", "2",
                 "--out", str(root / "runs"), "--no-progress", "--device", "cpu"])
    assert code == 0
    return next((root / "runs").glob("*-basic_cnn"))


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size_bytes) -> the directory of a fresh tmpfs of that size; every one is unmounted at the end."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(point)
        return point

    try:
        yield mount
    finally:
        for point in mounted:
            subprocess.run(["umount", str(point)], capture_output=True)


def _fill(directory: Path) -> None:
    """Use up every byte left on the file system of `directory`."""
    with open(directory / "filler", "wb", buffering=0) as f:
        for chunk in (2**20, 2**16, 2**12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC


def _make_read_only(directory: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True, capture_output=True)


def _temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*.tmp"))


def _picture(folder_run: Path) -> Path:
    import json

    folder = Path(json.loads((folder_run / "config.json").read_text())["dataset"].split(":", 1)[1])
    return folder / "bar" / "0.png"


def _commands(run: Path, target: Path, picture: Path) -> dict[str, tuple[list[str], str]]:
    """command name -> (argv, the file in `target` it writes)."""
    commands = {
        "export torchscript": (["export", str(run), "--format", "torchscript", "--out", str(target / "m.torchscript.pt")],
                               "m.torchscript.pt"),
        "evaluate --out": (["evaluate", str(run), "--out", str(target)], "confusion.png"),
        "predict --save-input": (["predict", str(run), str(picture), "--save-input", str(target)], "0.png-16x16.png"),
        "compare --out": (["compare", str(run), "--out", str(target / "compare.png")], "compare.png"),
    }
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        pass
    else:
        commands["export onnx"] = (["export", str(run), "--format", "onnx", "--out", str(target / "m.onnx")], "m.onnx")
    return commands


@pytest.mark.parametrize("fault, reason", [("full", "No space left on device"), ("read-only", "Read-only file system")])
def test_a_full_or_read_only_disk_is_one_line_and_every_previous_file_is_kept(folder_run, tmpfs, capsys, fault,
                                                                               reason, reliability):
    disk = tmpfs(4 * 2**20)
    picture = _picture(folder_run)
    commands = _commands(folder_run, disk, picture)
    before = {name: f"the previous {name}".encode() for _, name in commands.values()}
    for name, data in before.items():
        (disk / name).write_bytes(data)
    _fill(disk) if fault == "full" else _make_read_only(disk)
    for what, (argv, name) in commands.items():
        code, _, err = run_cli(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and "Traceback" not in err, (what, err)
        if what.startswith("predict"):  # the picture's own line: other pictures would still be predicted
            assert lines[0] == f"cnnlab predict: error: {picture}: cannot save the image the model saw ({reason})"
        else:
            assert lines[0] == f"cnnlab {argv[0]}: error: cannot write {disk / name} ({reason})", (what, err)
        assert {n: (disk / n).read_bytes() for n in before} == before, what
        assert _temporaries(disk) == [], what
    reliability("full or read-only disk", f"{', '.join(commands)} writing to a {fault} tmpfs that holds an earlier "
                "file of the same name", len(commands),
                "one line naming the file and the system's reason, exit 1; every earlier file byte-identical, no "
                "temporary file left")


def test_train_hitting_a_full_disk_keeps_the_last_checkpoint_and_says_how_to_resume(folder_run, tmpfs, capsys,
                                                                                    reliability):
    # Room for the first epoch's two checkpoints and half of a third: the second epoch's first checkpoint
    # write meets a full disk, whichever of best.pt and last.pt it is.
    size = (folder_run / "last.pt").stat().st_size
    disk = tmpfs(2 * size + size // 2 + 8 * 4096)
    folder = _picture(folder_run).parent.parent
    code, _, err = run_cli(capsys, "train", "--model", "basic_cnn", "--dataset", f"imagefolder:{folder}", "--epochs", "3",
                           "--out", str(disk), "--no-progress", "--device", "cpu")
    run = next(disk.glob("*-basic_cnn"))
    lines = err.strip().splitlines()
    assert code == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"cnnlab train: error: cannot write {run}/") and lines[0].endswith(
        ".pt (No space left on device)"), err
    assert lines[-1] == f"cnnlab train --resume {run}" and str(run) in lines[1], err
    from cnnlab.runs import Checkpoint

    assert Checkpoint.read(run / "last.pt").epoch == 1  # whole, and verified by its SHA-256
    assert _temporaries(disk) == []
    reliability("full or read-only disk", "cnnlab train on a tmpfs that fills up while the second epoch's "
                "checkpoint is written", 1,
                "one error line naming the file, then the run directory and its --resume command, exit 1; last.pt "
                "of epoch 1 whole, no temporary file")


def test_links_where_figures_and_saved_inputs_go_are_replaced_never_written_through(folder_run, tmp_path, capsys,
                                                                                    reliability):
    run = Path(shutil.copytree(folder_run, tmp_path / "run"))
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's thesis")
    saved = tmp_path / "saved"
    saved.mkdir()
    links = [run / "confusion.png", tmp_path / "compare.png", saved / "0.png-16x16.png"]
    for link in links:
        link.symlink_to(victim)
    picture = _picture(folder_run)
    assert run_cli(capsys, "evaluate", str(run))[0] == 0
    assert run_cli(capsys, "compare", str(run), "--out", str(tmp_path / "compare.png"))[0] == 0
    assert run_cli(capsys, "predict", str(run), str(picture), "--save-input", str(saved))[0] == 0
    assert victim.read_text() == "someone's thesis"
    for link in links:
        assert not link.is_symlink() and link.read_bytes().startswith(b"\x89PNG"), link
    reliability("symbolic links where cnnlab writes", "RUN/confusion.png, compare --out and a --save-input image "
                "made links to another file", len(links),
                "each link replaced by the new file; the file it pointed to unchanged")


@pytest.mark.processes
def test_predict_reads_around_a_device_and_a_pipe_and_saves_each_input_under_its_own_name(folder_run, tmp_path,
                                                                                         reliability):
    from PIL import Image

    picture = _picture(folder_run)
    a_png, a_jpg = tmp_path / "a.png", tmp_path / "a.jpg"
    shutil.copy(picture, a_png)
    Image.open(picture).save(a_jpg, quality=95)
    (tmp_path / "other").mkdir()
    again = shutil.copy(picture, tmp_path / "other" / "a.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    bad = ["/dev/zero", str(tmp_path / "pipe.png"), str(tmp_path / "zero.png")]
    saved = tmp_path / "saved"
    argv = [sys.executable, "-m", "cnnlab", "predict", str(folder_run), str(a_png), *bad, str(a_jpg), str(again),
            "--save-input", str(saved)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)  # the bug this guards: no end at all
    assert done.returncode == 1, done.stderr
    assert [ln.split(": ")[0] for ln in done.stdout.splitlines()] == [str(a_png), str(a_jpg), str(again)]
    assert done.stderr.splitlines() == [
        "cnnlab predict: error: /dev/zero: is a device, not an image file",
        f"cnnlab predict: error: {bad[1]}: is a named pipe, not an image file",
        f"cnnlab predict: error: {bad[2]}: is a device, not an image file",
    ]
    assert sorted(p.name for p in saved.iterdir()) == ["a.jpg-16x16.png", "a.png-16x16.png", "a.png-2-16x16.png"]
    reliability("images to predict", "/dev/zero, a named pipe and a .png linked to /dev/zero among good pictures, "
                "two of them named a.png, given to cnnlab predict --save-input", len(bad) + 1,
                "one line per bad path, found without reading it; the good ones predicted and each saved input "
                "under its own name (a.png-16x16.png, a.jpg-16x16.png, a.png-2-16x16.png), exit 1, in bounded time")
