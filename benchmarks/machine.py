"""Shared by the benchmarks: the machine line (from cnnlab.sysinfo) and writing results whole."""

from __future__ import annotations

import json
from pathlib import Path

from cnnlab.atomic import atomic_writer
from cnnlab.sysinfo import describe_machine  # noqa: F401  (the benchmarks import it from here)


def write_file(path: str | Path, text: str) -> None:
    """Write a results file whole or not at all (an interrupted benchmark never leaves half a file)."""
    with atomic_writer(path, "w", perms=0o644) as f:
        f.write(text)


def write_json(path: str | Path, obj) -> None:
    write_file(path, json.dumps(obj, indent=1) + "\n")


def write_results(out_dir: str | Path, name: str, results: dict, markdown: str) -> None:
    """Write NAME.json (every figure) and NAME.md (the report) to out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", results)
    write_file(out / f"{name}.md", markdown)
    print(markdown)
