"""The device to train on, and the process settings that make training fast there (each kept because it
measured faster).

CPU: glibc's malloc hands tensors of a few MB straight back to the kernel and then takes them again,
page by page, on the next step; raising its mmap and trim thresholds keeps them in the heap. In a probe
on the 2-core AMD EPYC of benchmarks/results (batch 256, channels_last, 3 interleaved processes each),
the median training step went from 59 to 69 GFLOP/s for `inception_net` and from 62 to 63 for `resnet`.
torch.compile was measured in the same probe and left out: it took 27-54 s to compile, then ran 5-30%
slower than eager channels_last.

CUDA: cuDNN picks its fastest convolution for our fixed shapes and float32 matrix products may use TF32;
bfloat16 autocast is there (--amp bf16) but off by default, since it measured slower for these networks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

from cnnlab.device import autocast, autocast_dtype, resolve_device, use_threads  # noqa: F401  (the loop and benchmarks import them from here too)

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_HEAP_LIMIT = 32 * 2**20  # glibc refuses mmap thresholds above 32 MiB on 64-bit machines

_tuned = False


def tune_cpu_allocator() -> bool:
    """Keep freed activation buffers in the malloc heap (glibc only). Returns whether it took effect."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, _HEAP_LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**30))
    return _tuned


def configure(device: torch.device, threads: int = 0) -> None:
    """Apply the settings for training on `device`; `threads` > 0 sets PyTorch's CPU threads."""
    use_threads(threads)
    if device.type == "cpu":
        tune_cpu_allocator()
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
