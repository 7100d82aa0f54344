import pytest

from cnnlab.analysis.cost import forward_flops
from cnnlab.models import branched_blocks, create_model, models_with_branches


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


@pytest.mark.parametrize("c_in, c_out, k, size, pad, stride", [(192, 32, 5, 28, 2, 1), (3, 7, 3, 11, 0, 2), (16, 16, 1, 9, 0, 1)])
def test_the_flop_counter_agrees_with_the_closed_form_for_a_convolution(c_in, c_out, k, size, pad, stride):
    from torch import nn

    from cnnlab.analysis.cost import conv_flops as counted

    conv = nn.Conv2d(c_in, c_out, k, padding=pad, stride=stride, bias=False)
    out = (size + 2 * pad - k) // stride + 1
    assert counted(conv, size) // 2 == k * k * c_in * c_out * out * out  # multiply-adds


def test_the_lecture_1x1_example_is_reproduced_on_real_layers():
    from cnnlab.analysis.cost import lecture_1x1_example

    assert lecture_1x1_example() == {"direct": 120_422_400, "with_1x1": 12_443_648}


def test_cost_rows_add_up_and_branches_split_their_block():
    from cnnlab.analysis.cost import cost_rows

    rows = {r.name: r for r in cost_rows(create_model("inception_net"))}
    assert rows["InceptionNet"].flops == forward_flops(create_model("inception_net"))
    top = [r for r in rows.values() if r.kind in ("layer", "block")]
    assert sum(r.flops for r in top) == rows["InceptionNet"].flops
    assert sum(r.parameters for r in top) == rows["InceptionNet"].parameters == 97_298
    for block in ("incep1", "incep2"):
        parts = [r for n, r in rows.items() if n.startswith(block + ".")]
        assert len(parts) == 4 and sum(r.flops for r in parts) == rows[block].flops
        assert sum(r.parameters for r in parts) == rows[block].parameters


@pytest.mark.parametrize("name", models_with_branches())
def test_the_cost_table_has_a_row_per_branch_and_the_branches_split_their_block(name):
    from cnnlab.analysis.cost import cost_rows

    model = create_model(name)
    rows = {r.name: r for r in cost_rows(model)}
    branch_rows = {n for n, r in rows.items() if r.kind == "branch"}
    blocks = branched_blocks(model)
    assert branch_rows == {f"{b}.{n}" for b, block in blocks.items() for n in block.branch_names}
    for block in blocks:
        assert rows[block].kind == "block"
        parts = [rows[f"{block}.{n}"] for n in blocks[block].branch_names]
        assert all(r.flops > 0 for r in parts if r.parameters)  # a dense layer's "given" is its input: no work
        assert sum(r.flops for r in parts) == rows[block].flops
        assert sum(r.parameters for r in parts) == rows[block].parameters


def test_inception_without_reductions_keeps_the_output_channels():
    from cnnlab.analysis.cost import inception_reduction_costs

    rows = inception_reduction_costs(((10, 12), (192, 28)))
    assert all(r["out_channels"] == 88 for r in rows)
    by = {(r["in_channels"], r["variant"]): r["macs"] for r in rows}
    assert by[(192, "without")] > 4 * by[(192, "with 1x1 reductions")]  # reductions pay with many input channels
    assert by[(10, "without")] < by[(10, "with 1x1 reductions")]  # and cost more when they widen 10 -> 16
