import pytest

from cnnlab.analysis.cost import forward_flops
from cnnlab.models import create_model


def conv_flops(c_in, c_out, k, out_hw):
    return 2 * c_in * c_out * k * k * out_hw * out_hw  # a multiply-add is 2 FLOPs


@pytest.mark.parametrize(
    "name, expected",
    [
        ("basic_cnn", conv_flops(1, 10, 5, 24) + conv_flops(10, 20, 5, 8) + 2 * 320 * 10),
        (
            "resnet",
            conv_flops(1, 16, 5, 24)
            + 2 * conv_flops(16, 16, 3, 12)
            + conv_flops(16, 32, 5, 8)
            + 2 * conv_flops(32, 32, 3, 4)
            + 2 * 512 * 10,
        ),
    ],
)
def test_forward_flops_match_a_count_by_hand(name, expected):
    assert forward_flops(create_model(name)) == expected


def test_flops_scale_with_image_size_and_leave_training_mode_alone():
    model = create_model("inception_net", image_size=56).train()
    small = forward_flops(create_model("inception_net"))
    assert forward_flops(model, image_size=56) > 3 * small
    assert model.training
