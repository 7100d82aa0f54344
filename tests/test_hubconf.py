"""hubconf.py: torch.hub.load(path, name, source="local") builds any registered network, fresh or trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab.models import list_models
from cnnlab.runs import load

ROOT = str(Path(__file__).resolve().parents[1])


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_loads_through_torch_hub(name):
    net = torch.hub.load(ROOT, name, source="local")
    assert isinstance(net, torch.nn.Module) and net.training  # fresh weights, ready to train
    assert net.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_builder_arguments_pass_through():
    net = torch.hub.load(ROOT, "resnet", source="local", in_channels=3, num_classes=7, image_size=32)
    assert net.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 7)


def test_a_checkpoint_gives_the_trained_weights(fashion_named_run):
    net = torch.hub.load(ROOT, "basic_cnn", source="local", checkpoint=fashion_named_run)
    trained = load(fashion_named_run, "cpu").network
    assert not net.training
    for (k, v), (k2, v2) in zip(net.state_dict().items(), trained.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_what_hub_cannot_honour_is_refused(fashion_named_run):
    with pytest.raises(ValueError, match="holds a basic_cnn, not a resnet"):
        torch.hub.load(ROOT, "resnet", source="local", checkpoint=fashion_named_run)
    with pytest.raises(ValueError, match="no pretrained weights"):
        torch.hub.load(ROOT, "resnet", source="local", pretrained=True)
    with pytest.raises(ValueError, match="fixes the network's shape"):
        torch.hub.load(ROOT, "basic_cnn", source="local", checkpoint=fashion_named_run, num_classes=3)
