"""One line naming the machine a benchmark ran on: CPU model, cores, memory, PyTorch and its threads."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal")))
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{cpu}, {os.cpu_count()} logical cores{mem}{gpu}; Python {platform.python_version()}, "
        f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def write_results(out_dir: str | Path, name: str, results: dict, markdown: str) -> None:
    """Write NAME.json (every figure) and NAME.md (the report) to out_dir, each whole or not at all."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for path, text in ((out / f"{name}.json", json.dumps(results, indent=1)), (out / f"{name}.md", markdown)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(markdown)
