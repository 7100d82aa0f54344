"""Branch analysis on the real model: silencing by hooks, energy shares, recorded gradient shares."""

import json

import pytest
import torch

from cnnlab.analysis.branches import branch_energy, gradient_shares, silenced
from cnnlab.models import create_model
from cnnlab.train import make_config
from cnnlab.train.gradients import GradNormRecorder, inception_branch_groups

from ..synthetic import synthetic_mnist


def _model():
    torch.manual_seed(0)
    return create_model("inception_net").eval()


def test_silencing_every_branch_leaves_only_what_the_bias_path_gives():
    model = _model()
    x1, x2 = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    everything = {"incep1": {"1x1", "5x5", "3x3dbl", "pool"}}
    with torch.no_grad(), silenced(model, everything):
        a, b = model(x1), model(x2)
    assert torch.equal(a, b)  # the input no longer reaches the output
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("conv2.", "incep2.", "fc.")) and name.endswith("bias"):
                p.zero_()
        with silenced(model, everything):
            assert torch.count_nonzero(model(x1)) == 0  # and what remains came from the biases after the block
        assert torch.count_nonzero(model(x1)) > 0  # the hook is gone after the context


def test_silencing_one_branch_zeroes_exactly_its_channels():
    model = _model()
    with torch.no_grad(), silenced(model, {"incep2": {"5x5"}}):
        out = model.incep2(torch.randn(2, 20, 4, 4))
    assert torch.count_nonzero(out[:, 16:40]) == 0  # the 5x5 branch: channels 16..39 of 88
    assert torch.count_nonzero(out[:, :16]) > 0 and torch.count_nonzero(out[:, 40:]) > 0
    with pytest.raises(ValueError, match="unknown branch"):
        with silenced(model, {"incep1": {"7x7"}}):
            pass


def test_energy_shares_sum_to_one_per_block():
    model = _model()
    images = synthetic_mnist(train=64, test=0).train_images
    shares = branch_energy(model, images, make_config("inception_net", channels_last=False))
    for block in ("incep1", "incep2"):
        assert sum(v for k, v in shares.items() if k.startswith(block + ".")) == pytest.approx(1.0)


def test_gradient_norms_recorded_by_hooks_equal_autograd():
    model = _model().train()
    groups = inception_branch_groups(model)
    assert set(groups) == {f"{b}.{n}" for b in ("incep1", "incep2") for n in ("1x1", "5x5", "3x3dbl", "pool")}
    recorder = GradNormRecorder(groups)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    recorder.step()
    for name, params in groups.items():
        direct = sum(float(p.grad.pow(2).sum()) for p in params)
        assert recorder.last[name] == pytest.approx(direct, rel=1e-5)
    recorder.close()


def test_gradient_shares_from_a_run_file(tmp_path):
    (tmp_path / "branch_grads.json").write_text(json.dumps({"epochs": [
        {"epoch": 1, "steps": 10, "mean_squared_norm": {"b.1x1": 1.0, "b.5x5": 3.0}},
        {"epoch": 2, "steps": 30, "mean_squared_norm": {"b.1x1": 1.0, "b.5x5": 1.0}},
    ]}))
    shares = gradient_shares(tmp_path)
    assert shares["b.1x1"] == pytest.approx(40 / 100) and shares["b.5x5"] == pytest.approx(60 / 100)
    assert gradient_shares(tmp_path / "nothing") is None
