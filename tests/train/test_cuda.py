"""The CUDA path: data resident on the GPU, bfloat16 autocast, checkpoints that load on a CPU.
These skip themselves on a machine without a CUDA GPU (CI has none; run them where one is lent)."""

import math

import pytest
import torch

from cnnlab.device import autocast_dtype
from cnnlab.train import fit, make_config
from cnnlab.runs import load_checkpoint

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_autocast_is_bf16_only_when_asked():
    for dev in ("cpu", "cuda"):
        d = torch.device(dev)
        assert autocast_dtype(d, "auto") is None and autocast_dtype(d, "off") is None  # bf16 measured slower
    assert autocast_dtype(torch.device("cpu"), "bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown amp"):
        autocast_dtype(torch.device("cpu"), "fp8")


@cuda
@pytest.mark.parametrize("model", ["basic_cnn", "resnet", "inception_net"])
@pytest.mark.parametrize("amp", ["auto", "bf16"])
def test_fit_on_cuda_with_and_without_bf16_autocast(tiny_mnist, tmp_path, model, amp):
    cfg = make_config(model, epochs=2, batch_size=50, val_size=100, device="cuda", amp=amp)
    result = fit(cfg, tiny_mnist, out_root=tmp_path, progress=False)
    assert all(math.isfinite(r["train_loss"]) for r in result.history)
    state = load_checkpoint(result.run_dir / "last.pt")
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in state["model_state"].values() if t.is_floating_point())


@cuda
def test_time_budget_on_cuda(tiny_mnist, tmp_path):
    cfg = make_config("resnet", time_budget=3.0, batch_size=50, val_size=100, device="cuda")
    result = fit(cfg, tiny_mnist, out_root=tmp_path, progress=False)
    assert result.history and result.history[-1]["steps"] >= 1
