"""Where a command runs a model: one meaning of --device and --threads for train, evaluate, predict, serve,
export, analyze and report; and the process settings that make training fast there (`configure`).

Each setting is kept because it measured faster.

CPU: glibc's malloc hands tensors of a few MB straight back to the kernel and then takes them again,
page by page, on the next step; raising its mmap and trim thresholds keeps them in the heap (every command that
runs a model: `cnnlab.cli.args.use_device`, `cnnlab.runs.trained.load`). In a probe
on the 2-core AMD EPYC of benchmarks/results (batch 256, channels_last, 3 interleaved processes each),
the median training step went from 59 to 69 GFLOP/s for `inception_net` and from 62 to 63 for `resnet`.
torch.compile was measured in the same probe and left out: it took 27-54 s to compile, then ran 5-30%
slower than eager channels_last. On a CPU with bfloat16 instructions (AMX or AVX512_BF16) the training step under
bfloat16 autocast ran 1.2-1.8x as many images a second as in float32 (`training_dtype`), so `--amp auto` trains so
there.

CUDA: cuDNN picks its fastest convolution for our fixed shapes and float32 matrix products may use TF32;
bfloat16 autocast is there (--amp bf16) but off by default, since it measured slower for these networks.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")

# PyTorch's own thread count (one per physical core, or OMP_NUM_THREADS), read when this module is first imported,
# before any command changed it: what `--threads 0` means, for every run in the process alike (cnnlab.fit twice in a
# notebook, the first with threads=1, trains the second on this count again, not on what the first left).
PYTORCH_THREADS = torch.get_num_threads()


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then the CPU; an explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA GPU")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps was asked for, but this PyTorch has no MPS backend here")
    if name not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}; choose from auto, cpu, cuda, mps")
    return torch.device(name)


def use_threads(threads: int) -> None:
    """`threads` > 0 sets PyTorch's CPU threads; 0 sets PyTorch's own count (PYTORCH_THREADS)."""
    want = threads if threads > 0 else PYTORCH_THREADS
    if torch.get_num_threads() != want:
        torch.set_num_threads(want)


def bfloat16_units() -> str | None:
    """The bfloat16 instructions this CPU has for oneDNN's convolutions and matrix products: "AMX" (tiles; Intel Xeon
    from Sapphire Rapids on), "AVX512_BF16" (dot products; AMD from Zen 4 on, Intel Cooper Lake), or None (bfloat16
    would be converted to float32 and back around float32 arithmetic). Read through torch's private probes, the only
    ones it offers: a probe that is absent or fails counts as no."""
    for name, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512_BF16", "_is_avx512_bf16_supported")):
        try:
            if getattr(torch.cpu, probe)():
                return name
        except (AttributeError, RuntimeError):
            continue
    return None


def training_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The dtype a training step's forward pass autocasts to: as `autocast_dtype`, except that 'auto' is bfloat16
    on a CPU with bfloat16 instructions (`bfloat16_units`). cnnlab's training step with augmentation, against
    float32 in the same run, trained 1.51x and 1.76x the images a second for resnet and inception_net on a 2-core
    Xeon with AMX (benchmarks/results/speed.md), 1.21x and 1.37x (resnet_bn 1.39x) on a 2-core AMD EPYC, Zen 4, with
    AVX512_BF16 (benchmarks/results/precision.md), to the same accuracy (docs/results.md). Evaluation stays float32
    for 'auto', so that a run's reported accuracy is what evaluate, predict, serve and export then give on any
    machine. CPUs without them (the AVX2 EPYCs among them) keep float32, where bfloat16 would mean converting around
    float32 arithmetic."""
    if amp == "auto" and device.type == "cpu" and bfloat16_units():
        return torch.bfloat16
    return autocast_dtype(device, amp)


def training_precision(device: torch.device, amp: str, weights: torch.dtype = torch.float32) -> str:
    """What a training step's forward pass computes in, by name, as summary.json and the benchmarks record it: the
    autocast dtype of `training_dtype`, else the weights' ("bfloat16", "float32", "float64")."""
    return str(training_dtype(device, amp) or weights).removeprefix("torch.")


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The dtype an evaluation's forward pass autocasts to (a training step's: `training_dtype`): None (float32)
    for 'auto' and 'off', bfloat16 for 'bf16'.

    'auto' evaluates in float32 on every device. On a GPU it trains so too, by measurement: on an H200
    (benchmarks/results/gpu.md) bfloat16 autocast made these small networks' training step slower, not faster (resnet batch 128: 26,746 against
    28,470 images/s; inception_net batch 512: 59,541 against 95,242), since their convolutions are too thin
    for tensor cores to pay for the casts. A network with wide layers would choose otherwise.
    """
    if amp == "off":
        return None
    if amp == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("--amp bf16 was asked for, but this GPU has no bfloat16 support")
        return torch.bfloat16
    if amp == "auto":
        return None
    raise ValueError(f"unknown amp setting {amp!r}; choose from auto, bf16, off")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A context that autocasts to `dtype` on `device`, or does nothing when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
# Blocks below this come from the heap and are reused. An evaluation batch of 1000 images has activations of
# 50-100 MB; older glibc refuses thresholds above 32 MiB (HEAP_MAX_SIZE / 2 on 64-bit), and then that is taken.
_MMAP_THRESHOLDS = (2**30, 32 * 2**20)
_TRIM_THRESHOLD = 2**30  # free memory kept at the heap's top before it is handed back to the kernel

_tuned = False


def tune_cpu_allocator() -> bool:
    """Keep freed tensors in the malloc heap for reuse (glibc only). Returns whether it took effect.

    Without it, glibc maps every block above its threshold fresh from the kernel and unmaps it when freed, so each
    batch touches its pages anew: `cnnlab analyze branches` on inception_bn spent 145 of its 195 s in the kernel,
    and one evaluation of the 10,000 test images took 5.1 s against 2.9 s with the heap kept (batch 1000; 2-core
    Xeon, AVX-512)."""
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
    _tuned = any(mallopt(_M_MMAP_THRESHOLD, t) for t in _MMAP_THRESHOLDS) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
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
