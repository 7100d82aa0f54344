"""The machine line every measured table carries must name the CPU kind, not only its marketing name."""

import torch

from cnnlab.sysinfo import cpu_kind, describe_machine


def test_the_machine_line_names_the_kernels_pytorch_picks_on_this_cpu():
    capability = torch.backends.cpu.get_cpu_capability()
    assert capability  # e.g. AVX2, AVX512, DEFAULT
    assert f"PyTorch kernels: {capability}" in cpu_kind()
    line = describe_machine()
    assert line.startswith(cpu_kind()) and f"PyTorch {torch.__version__}" in line
