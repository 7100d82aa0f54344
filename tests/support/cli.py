"""cnnlab's command line run in the test process, as a user's shell runs it, with what it printed."""

from __future__ import annotations


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`cnnlab ARGV...` through cnnlab.cli.main: its exit code, and what it wrote to stdout and stderr (read off
    pytest's `capsys`, which starts empty again for the next command)."""
    from cnnlab.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
