"""The CUDA path: data resident on the GPU, bfloat16 autocast, checkpoints that load on a CPU, and evaluation that
agrees with the CPU's. The tests marked gpu are skipped on a machine without a CUDA GPU (CI has none; run them where
one is lent: `pytest -m gpu`)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from cnnlab.device import autocast_dtype, bfloat16_units, training_dtype
from cnnlab.runs import Checkpoint, evaluate, load
from cnnlab.runs.rundir import read_metrics
from cnnlab.train import fit, make_config

CHANCE = math.log(10)  # the cross-entropy of an untrained 10-class network: where every run starts


def test_autocast_is_bf16_only_when_asked():
    for dev in ("cpu", "cuda"):
        d = torch.device(dev)
        assert autocast_dtype(d, "auto") is None and autocast_dtype(d, "off") is None  # bf16 measured slower
    assert autocast_dtype(torch.device("cpu"), "bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown amp"):
        autocast_dtype(torch.device("cpu"), "fp8")


def test_training_autocasts_to_bf16_by_default_on_a_cpu_with_bfloat16_instructions_and_nowhere_else():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert training_dtype(cpu, "auto") is (torch.bfloat16 if bfloat16_units() else None)
    assert training_dtype(cuda, "auto") is None and training_dtype(cpu, "off") is None
    assert training_dtype(cpu, "bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown amp"):
        training_dtype(cpu, "fp8")


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="the CPU's flags are read from /proc/cpuinfo")
def test_bfloat16_instructions_are_found_exactly_where_the_cpu_reports_them():
    flags = {f for line in open("/proc/cpuinfo") if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    assert bfloat16_units() == ("AMX" if "amx_tile" in flags else "AVX512_BF16" if "avx512_bf16" in flags else None)


def test_a_missing_or_failing_probe_counts_as_no_bfloat16_instructions(monkeypatch):
    def fails() -> bool:
        raise RuntimeError("cpuinfo could not be read")

    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)  # a later torch without the probe
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", fails, raising=False)
    assert bfloat16_units() is None
    assert training_dtype(torch.device("cpu"), "auto") is None  # then auto trains in float32


def _short_cuda_run(data, out, model: str, amp: str = "auto"):
    cfg = make_config(model, steps=150, batch_size=128, device="cuda", amp=amp, seed=0)
    return fit(cfg, data, out_root=out, progress=False)


@pytest.mark.gpu  # skipped where PyTorch sees no CUDA GPU (tests/conftest.py)
@pytest.mark.slow  # trains on the real MNIST
@pytest.mark.parametrize("model", ["basic_cnn", "resnet", "inception_net"])
@pytest.mark.parametrize("amp", ["auto", "bf16"])
def test_a_short_run_on_cuda_learns_and_saves_finite_float32_weights_on_the_cpu(real_mnist, tmp_path, model, amp):
    result = _short_cuda_run(real_mnist, tmp_path, model, amp)
    (row,) = result.history  # 150 steps of 128: part of one epoch
    # From chance to far below it: 150 steps take these networks to a test loss of about 0.15 and 97% on a CPU (the
    # mean training loss, its first steps at chance and under the warm-up, to 1.0-1.3); the bounds leave wide margins.
    assert row["test_loss"] < CHANCE / 3 and row["test_acc"] > 0.7, row
    assert row["train_loss"] < 0.75 * CHANCE, row
    floats = [t for t in Checkpoint.read(result.run_dir / "last.pt").model_state.values() if t.is_floating_point()]
    assert floats
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 and bool(torch.isfinite(t).all()) for t in floats)


@pytest.mark.gpu  # skipped where PyTorch sees no CUDA GPU (tests/conftest.py)
@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet", "inception_bn"])
def test_a_checkpoint_evaluates_alike_on_cuda_and_on_the_cpu(real_mnist, tmp_path, model):
    run_dir = _short_cuda_run(real_mnist, tmp_path, model).run_dir
    images, labels = real_mnist.test_images[:2000], real_mnist.test_labels[:2000]
    on_gpu, on_cpu = load(run_dir, "cuda"), load(run_dir, "cpu")
    gpu_logits = on_gpu.logits(images).cpu().numpy()
    cpu_logits = on_cpu.logits(images).numpy()
    # cuDNN's kernels (TF32 convolutions, which training switches on) round otherwise than the CPU's: the logits agree
    # to 1% of their size, not to float32 rounding
    scale = float(np.abs(cpu_logits).max())
    np.testing.assert_allclose(gpu_logits, cpu_logits, rtol=1e-2, atol=1e-2 * scale)
    gpu_loss, gpu_acc = evaluate(on_gpu.network, images.cuda(), labels.cuda(), on_gpu.config)
    cpu_loss, cpu_acc = evaluate(on_cpu.network, images, labels, on_cpu.config)
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-2) and abs(gpu_acc - cpu_acc) <= 0.005
    assert cpu_acc > 0.7  # a model that reads digits: the comparison is not of two near-constant outputs


@pytest.mark.gpu  # skipped where PyTorch sees no CUDA GPU (tests/conftest.py)
def test_a_time_budget_run_on_cuda_plans_from_timings_that_wait_for_the_gpu(tiny_mnist, tmp_path):
    budget = 3.0
    cfg = make_config("resnet", time_budget=budget, batch_size=50, val_size=100, device="cuda")
    result = fit(cfg, tiny_mnist, out_root=tmp_path, progress=False)
    rows = read_metrics(result.run_dir / "metrics.csv")
    assert rows and rows[-1]["steps"] == Checkpoint.read(result.run_dir / "last.pt").total_steps
    assert rows[-1]["steps"] > 10  # a GPU takes far more than the few steps it times before planning
    # Timing kernel launches instead of finished steps would make steps look nearly free and plan many times too
    # many: the run would overrun its budget by far, where a correct plan ends inside it (twice it, for margin).
    assert rows[-1]["elapsed"] < 2 * budget, rows[-1]
