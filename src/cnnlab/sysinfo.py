"""One line naming the machine a measurement ran on: CPU model and kind, cores, memory, GPU, Python, PyTorch
and its threads.

The CPU kind matters as much as the model name: "AMD EPYC" has named both an AVX2 generation and an AVX-512 one
on our machines, and PyTorch picks other kernels on each (`torch.backends.cpu.get_cpu_capability()`), so float
results differ in the last bits and a seeded run repeats exactly only on the same kind.
"""

from __future__ import annotations

import os
import platform

import torch


def cpu_kind() -> str:
    """The CPU's model name, family and model numbers, and the instruction set PyTorch's kernels use,
    e.g. "AMD EPYC (family 25, model 17; PyTorch kernels: AVX512)"."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                key, _, value = ln.partition(":")
                if not ln.strip():
                    break  # the first processor is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    numbers = ", ".join(f"{k} {fields[k2]}" for k, k2 in (("family", "cpu family"), ("model", "model")) if k2 in fields)
    return f"{name} ({numbers + '; ' if numbers else ''}PyTorch kernels: {torch.backends.cpu.get_cpu_capability()})"


def describe_machine() -> str:
    cpu = cpu_kind()
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
