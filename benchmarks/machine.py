"""Shared by the benchmarks: the machine line (from cnnlab.sysinfo) and writing results whole."""

from __future__ import annotations

import json
from pathlib import Path

from cnnlab.sysinfo import describe_machine  # noqa: F401  (the benchmarks import it from here)


def write_results(out_dir: str | Path, name: str, results: dict, markdown: str) -> None:
    """Write NAME.json (every figure) and NAME.md (the report) to out_dir, each whole or not at all."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for path, text in ((out / f"{name}.json", json.dumps(results, indent=1)), (out / f"{name}.md", markdown)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(markdown)
