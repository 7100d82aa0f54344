"""How one value was computed (cnnlab.inference.values): the arithmetic it shows gives the model's own value, on every
registered model, for convolutions, poolings, ReLUs, batch norms, sums and concatenations, with parts switched off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.inference.explain import explain
from cnnlab.inference.values import NoSuchValue, explain_value
from cnnlab.models import list_models
from cnnlab.runs.forward import model_input

from .test_inside_view import _seven, _trained

MODELS = list_models()


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-5 * max(1.0, abs(b))


def _clicked(e) -> list[tuple[int, tuple[int, ...]]]:
    """(stage, shape) of every map the page lets a student click: each stage's, branch's and path's maps."""
    out = []
    for layer in e.layers:
        if layer.maps is not None:
            out.append((layer.stage, layer.shape))
        out += [(b.stage, b.shape) for b in layer.branches if b.maps is not None and b.stage >= 0]
        out += [(p.stage, layer.shape) for p in layer.paths if p.maps is not None and p.stage >= 0]
    return out


@pytest.mark.parametrize("name", MODELS)
def test_every_step_s_arithmetic_gives_the_model_s_value(name):
    trained = _trained(name)
    picture = _seven()
    e = explain(trained, picture)
    checked = set()
    for stage, (c, h, w) in _clicked(e):
        for channel, y, x in ((0, h // 2, w // 3), (c - 1, h - 1, 0)):
            answer = explain_value(trained, picture, stage, channel, y, x)
            assert answer["stage"] == stage and answer["at"] == [channel, y, x]
            for step in answer["steps"]:
                if "computed" in step:
                    assert _close(step["computed"], step["value"]), (name, step["name"], step["op"])
                    checked.add(step["op"])
            clicked = next(s for s in answer["steps"] if s["stage"] == stage)
            assert clicked["value"] == answer["value"] and clicked["at"] == [channel, y, x]
    assert "conv" in checked and "relu" in checked
    shown = "\n".join(e.lines)  # a network with pooling or batch norm has it explained too
    assert ("maxpool" in checked) or ("bn" in checked) or not ("max pooling" in shown or "batch norm" in shown)


def test_a_convolution_s_value_is_its_window_times_its_kernel_plus_its_bias():
    """conv1 of inception_net, a value near the digit: the window is the standardised picture itself, the kernel is
    conv1's weights, and the result is what conv1 outputs in the network's own forward."""
    trained = _trained("inception_net")
    picture = _seven()
    x_in = model_input(torch.from_numpy(trained.prepare(picture)).unsqueeze(0), trained.config)
    with torch.inference_mode():
        own = trained.network.conv1(x_in)[0]
    answer = explain_value(trained, picture, 0, 3, 7, 9)
    conv = answer["steps"][0]
    assert conv["op"] == "conv" and conv["name"] == "conv1" and conv["origin"] == [7, 9]
    window, kernel = np.array(conv["window"]), np.array(conv["kernel"])
    assert window.shape == kernel.shape == (1, 5, 5)
    assert np.allclose(window[0], x_in[0, 0, 7:12, 9:14].numpy(), atol=1e-6)
    assert np.allclose(kernel, trained.network.conv1.weight[3].detach().numpy(), atol=1e-7)
    assert conv["sum"] == pytest.approx(float((window * kernel).sum()), abs=1e-9)
    assert conv["computed"] == pytest.approx(conv["sum"] + conv["bias"], abs=1e-9)
    assert conv["computed"] == pytest.approx(float(own[3, 7, 9]), abs=1e-5)
    assert conv["macs"]["value"] == 25 and conv["macs"]["layer"] == 25 * 10 * 24 * 24
    # then the 2x2 max pooling the value falls in, and the ReLU
    pool, relu = answer["steps"][1:3]
    assert pool["op"] == "maxpool" and pool["at"] == [3, 3, 4] and pool["origin"] == [6, 8]
    window = np.array(pool["window"])
    assert window[1, 1] == pytest.approx(conv["value"], abs=1e-6)  # the clicked value is in it
    assert pool["computed"] == pytest.approx(window.max()) and window.flat[np.argmax(window)] == window[tuple(pool["picked"])]
    assert relu["op"] == "relu" and relu["computed"] == max(0.0, pool["value"])


def test_a_1x1_convolution_mixes_channels_and_costs_a_25th_of_a_5x5():
    trained = _trained("inception_net")
    e = explain(trained, _seven())
    one = e.layer("incep1").branches[0]  # the 1x1 branch: one 1x1 convolution over conv1's 10 channels
    answer = explain_value(trained, _seven(), one.stage, 2, 5, 5)
    conv = answer["steps"][0]
    assert np.array(conv["window"]).shape == (10, 1, 1) and len(conv["by_channel"]) == 10
    assert conv["macs"]["value"] == 10 and conv["macs"]["value_5x5"] == 250
    assert _close(conv["computed"], answer["value"])


def test_a_value_after_a_switched_off_block_reads_what_the_network_went_on_with():
    """Every branch of incep1 off: conv2 reads zeros, so each of its values is its bias alone."""
    trained = _trained("inception_net")
    off = [f"incep1.{b}" for b in ("1x1", "5x5", "3x3dbl", "pool")]
    e = explain(trained, _seven(), off)
    conv2 = e.layer("conv2")
    answer = explain_value(trained, _seven(), conv2.stage, 4, 3, 3, silence=off)
    conv = answer["steps"][0]
    assert not np.array(conv["window"]).any()
    assert conv["computed"] == pytest.approx(float(trained.network.conv2.bias[4].detach()), abs=1e-6)
    assert _close(conv["computed"], answer["value"])
    # and the concatenation of the switched block says which branch a channel came from, and that it is off
    concat = explain_value(trained, _seven(), e.layer("incep1").stage, 20, 1, 1, silence=off)["steps"]
    assert concat[0]["op"] == "concat" and concat[0]["branch"] == "5x5" and concat[0]["channel"] == 4
    assert concat[-1]["op"] == "switched" and concat[-1]["value"] == 0.0


def test_a_residual_block_s_output_is_its_skip_plus_its_conv_path_rectified():
    trained = _trained("resnet")
    e = explain(trained, _seven())
    block = e.layer("rblock1")
    steps = explain_value(trained, _seven(), block.stage, 5, 6, 6)["steps"]
    assert [s["op"] for s in steps] == ["sum", "relu"]
    conv, skip = steps[0]["terms"]
    assert _close(steps[0]["computed"], conv + skip) and _close(steps[1]["computed"], max(0.0, conv + skip))


@pytest.mark.parametrize("where", [(999, 0, 0, 0), (0, 10, 0, 0), (0, 0, 24, 0), (0, 0, 0, -1), (0, "1", 0, 0),
                                   (0, 0, 0, True)])
def test_a_value_the_forward_does_not_have_is_refused_with_one_clear_error(where):
    trained = _trained("inception_net")
    with pytest.raises(NoSuchValue):
        explain_value(trained, _seven(), *where)
    flatten = explain(trained, _seven()).layer("flatten").stage
    with pytest.raises(NoSuchValue, match="vector"):
        explain_value(trained, _seven(), flatten, 0, 0, 0)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in trained.network.modules())
