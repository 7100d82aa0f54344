"""What `cnnlab train` prints while it runs and when it stops: where the run is, how to continue it, and logs
that read as lines."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest


def _train(procs, folder, out, *extra: str) -> list[str]:
    return procs.command(1, ["train", "--model", "basic_cnn", "--dataset", f"imagefolder:{folder}", "--batch-size", "8",
                             "--out", str(out), *extra], module=True)


def test_ctrl_c_names_the_run_and_the_command_that_continues_it_on_lines_of_their_own(procs, noise_folder, tmp_path,
                                                                                      reliability):
    out = tmp_path / "runs"
    p = procs.start(_train(procs, noise_folder, out, "--epochs", "1000"))
    end = time.monotonic() + 120
    while not list(out.glob("*/last.pt")):  # a finished epoch: something to resume
        assert p.poll() is None and time.monotonic() < end, p.communicate()
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    (run,) = out.glob("*-basic_cnn")
    assert p.returncode == 130, (stdout, stderr)
    assert f"basic_cnn: run directory {run}\n" in stdout  # printed when training began
    lines = stderr.splitlines()
    assert "cnnlab train: interrupted" in lines, stderr  # a line of its own, from its start
    assert f"cnnlab train --resume {run}" in lines, stderr
    assert "Traceback" not in stderr
    reliability("training", "Ctrl-C (SIGINT) during a run", 1,
                "exit 130; 'interrupted' and the exact 'cnnlab train --resume DIR' each on a line of their own")


@pytest.mark.parametrize("flag", [[], ["--no-progress"]], ids=["default", "no-progress"])
def test_output_to_a_pipe_is_one_plain_line_per_epoch(procs, noise_folder, tmp_path, flag):
    out = tmp_path / "runs"
    # Bytes, not text: text mode would turn a bar's carriage returns into newlines.
    done = subprocess.run(_train(procs, noise_folder, out, "--epochs", "3", *flag), capture_output=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert b"\r" not in done.stdout and b"\r" not in done.stderr  # no bars redrawn in a log
    lines = done.stdout.decode().splitlines()
    epochs = [ln for ln in lines if ln.startswith("basic_cnn epoch ")]
    assert [ln.split()[2] for ln in epochs] == ["1/3", "2/3", "3/3"], lines
    (run,) = out.glob("*-basic_cnn")
    assert lines[1] == f"basic_cnn: run directory {run}"


def test_a_loss_that_is_not_finite_names_the_run_directory_in_its_one_line(noise_folder, tmp_path, capsys, reliability):
    from cnnlab.cli import main

    argv = ["train", "--model", "basic_cnn", "--dataset", f"imagefolder:{noise_folder}", "--batch-size", "2",
            "--lr", "1e6", "--out", str(tmp_path / "runs"), "--no-progress"]
    code = main([*argv, "--steps", "6"])  # blows up at step 3, in the first epoch: nothing to keep
    err = capsys.readouterr().err
    # One line, no resume command: resuming would repeat the same steps into the same overflow.
    assert code == 1 and err.count("\n") == 1, err
    assert "stopped being a finite number" in err and "no epoch had finished, so nothing was kept" in err, err
    assert not list((tmp_path / "runs").iterdir()), "a run that never finished an epoch left its directory"
    reliability("training", "the loss stops being finite in the first epoch (--lr 1e6)", 1,
                "one line: 'stopped being a finite number at step N (epoch 1) ... no epoch had finished, so nothing "
                "was kept (RUN removed)'; exit 1; no run directory left behind")


@pytest.mark.real_data  # cnnlab train on MNIST
def test_ctrl_c_in_the_first_epoch_leaves_no_run_directory(procs, tmp_path, reliability):
    """A run stopped before its first epoch ended has nothing to resume or read: its directory (config.json alone,
    until now) is removed, and the message says so in its line."""
    out = tmp_path / "runs"
    p = procs.start(procs.command(1, ["train", "--model", "basic_cnn", "--epochs", "3", "--out", str(out), "--no-progress"],
                                  module=True))  # real MNIST: an epoch lasts seconds
    end = time.monotonic() + 120
    while not list(out.glob("*/config.json")):
        assert p.poll() is None and time.monotonic() < end, p.communicate()
        time.sleep(0.01)
    (run,) = out.glob("*-basic_cnn")
    assert not (run / "last.pt").exists()
    os.kill(p.pid, signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in stderr, stderr
    assert not run.exists() and not list(out.iterdir()), list(out.iterdir())
    assert f"cnnlab train: no epoch had finished, so nothing was kept ({run} removed): start the run again" in stderr.splitlines()
    reliability("training", "Ctrl-C (SIGINT) during the first epoch", 1,
                "exit 130; 'interrupted', then one line saying no epoch had finished and the run directory was removed; "
                "nothing left behind")


def _read_all(fd: int, timeout: float) -> bytes:
    """Everything written to a pty's other end until it closes (EIO on Linux) or the time is up."""
    import select

    chunks, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_on_a_terminal_ctrl_c_during_a_bar_starts_its_message_at_the_start_of_a_line(procs, noise_folder, tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    out = tmp_path / "runs"
    master, slave = pty.openpty()  # a terminal: the bars are drawn, as for a user at a shell
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 0 columns would hide the bars
    p = procs.start(_train(procs, noise_folder, out, "--epochs", "1000"), stdout=slave, stderr=slave)
    os.close(slave)
    screen: list[bytes] = []
    end = time.monotonic() + 120
    while not list(out.glob("*/last.pt")) or b"%|" not in b"".join(screen)[-2000:]:  # a bar on screen now
        assert p.poll() is None and time.monotonic() < end, b"".join(screen)[-2000:]
        screen.append(_read_all(master, 0.05))
    os.kill(p.pid, signal.SIGINT)
    screen.append(_read_all(master, 60))
    p.wait(timeout=60)
    os.close(master)
    text = b"".join(screen).decode(errors="replace")
    assert p.returncode == 130, text[-2000:]
    before = text[: text.index("cnnlab train: interrupted")]
    # What is left of the line the message starts on, as a terminal shows it: the text after the last line
    # feed, of which a carriage return keeps only what follows it.
    shown = before.rsplit("\n", 1)[-1].rsplit("\r", 1)[-1]
    assert shown.strip() == "", repr(before[-300:])
    (run,) = out.glob("*-basic_cnn")
    assert f"\ncnnlab train --resume {run}\r\n" in text  # a terminal ends lines with CR LF


def test_the_closing_table_of_a_run_without_validation_shows_a_dash_for_best_val_not_nan(noise_folder, tmp_path, capsys):
    from cnnlab.cli import main

    code = main(["train", "--model", "basic_cnn", "--recipe", "course", "--dataset", f"imagefolder:{noise_folder}",
                 "--batch-size", "8", "--steps", "2", "--out", str(tmp_path / "runs"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "chosen by being last" in out and not re.search(r"\bnan\b", out, re.I), out
    header, _, row = out[out.index("model "):].splitlines()[:3]
    assert header.split()[-6:-4] == ["best", "val"] and row.split()[-3] == "-", out  # then test acc, train time
