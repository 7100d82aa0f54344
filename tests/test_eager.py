"""cnnlab.eager: torch's optimisers and FLOP counter without importing torch._dynamo, with torch's own results."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cnnlab.eager import eager_optimizer
from cnnlab.models import create_model


@pytest.mark.parametrize("cls, kwargs", [
    (torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)),
    (torch.optim.AdamW, dict(lr=1e-3, betas=(0.9, 0.999), weight_decay=5e-4)),
], ids=["sgd", "adamw"])
def test_the_eager_optimiser_steps_exactly_as_torchs_and_shares_its_state_dict(cls, kwargs):
    torch.manual_seed(0)
    ours, theirs = create_model("basic_cnn"), create_model("basic_cnn")
    theirs.load_state_dict(ours.state_dict())
    opt_ours, opt_theirs = eager_optimizer(cls)(ours.parameters(), **kwargs), cls(theirs.parameters(), **kwargs)
    assert isinstance(opt_ours, cls)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    state = opt_ours.state_dict()
    torch.testing.assert_close(state, opt_theirs.state_dict(), rtol=0, atol=0)
    fresh = cls(theirs.parameters(), **kwargs)
    fresh.load_state_dict(state)  # a checkpoint of ours loads into torch's own, and back
    eager_optimizer(cls)(ours.parameters(), **kwargs).load_state_dict(fresh.state_dict())


@pytest.mark.processes
def test_training_and_counting_flops_import_nothing_of_the_compiler(tmp_path):
    """torch._dynamo takes 1-1.4 s to import: a run that reaches 99% in seconds must not pay it."""
    code = f"""
import sys
from cnnlab.analysis.cost import forward_flops
from cnnlab.models import create_model
from cnnlab.train import fit, make_config
sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
from support.data import synthetic_mnist
fit(make_config("basic_cnn", steps=3, batch_size=50, val_size=50, device="cpu"), synthetic_mnist(train=200, test=50),
    out_root={str(tmp_path)!r}, progress=False)
assert forward_flops(create_model("resnet")) > 0
print("torch._dynamo" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", out.stdout
