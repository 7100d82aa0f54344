import pytest
import torch

from cnnlab.models import (
    Inception,
    ResidualBlock,
    branched_blocks,
    count_parameters,
    create_model,
    list_models,
    models_with_branches,
    register_model,
)

# Parameter counts and linear-layer widths fixed by the lecture (and the previous one).
LECTURE = {"basic_cnn": (8_490, 320), "inception_net": (97_298, 1408), "resnet": (41_514, 512)}


def test_registry_lists_the_lecture_networks():
    assert set(LECTURE) <= set(list_models())


@pytest.mark.parametrize("name", sorted(LECTURE))
def test_parameter_counts_and_inferred_linear_width_match_the_lecture(name):
    model = create_model(name)
    params, fc_in = LECTURE[name]
    assert count_parameters(model) == params
    assert model.fc.in_features == fc_in


@pytest.mark.parametrize("name", list_models())
def test_forward_shape_no_nans_and_gradient_reaches_first_layer(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(4, 1, 28, 28)
    out = model(x)
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    first = next(model.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list_models())
def test_networks_adapt_to_channels_classes_and_size(name):
    model = create_model(name, in_channels=3, num_classes=7, image_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", list_models())
def test_networks_reject_arguments_they_cannot_honour(name):
    with pytest.raises(ValueError):
        create_model(name, image_size=4)
    with pytest.raises(ValueError):
        create_model(name, num_classes=1)


def test_unknown_model_and_duplicate_registration_are_errors():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("no_such_net")
    with pytest.raises(ValueError, match="already registered"):

        @register_model
        def resnet():  # noqa: F811
            return torch.nn.Identity()


def test_inception_branch_order_and_sizes():
    block = Inception(10)
    # Mark each branch by its final bias with every weight zeroed; the output channels show the order.
    finals = [block.branch1x1, block.branch5x5_2, block.branch3x3_3, block.branch_pool]
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
        for i, conv in enumerate(finals):
            conv.bias.fill_(i + 1)
    out = block(torch.randn(2, 10, 12, 12))
    assert out.shape == (2, 88, 12, 12)
    expected = torch.cat([torch.full((c,), float(i + 1)) for i, c in enumerate((16, 24, 24, 24))])
    assert torch.equal(out[0, :, 5, 5], expected)
    assert block.branch5x5_2.kernel_size == (5, 5)  # the notes' kernel_size=1 is the bug we fixed
    assert block.branch_names == ("1x1", "5x5", "3x3dbl", "pool")
    assert block.branch_channels == (16, 24, 24, 24)


def test_inception_forward_is_the_concatenation_of_its_branches():
    block = Inception(20)
    x = torch.randn(3, 20, 4, 4)
    assert torch.equal(block(x), torch.cat(block.branches(x), 1))


def test_residual_block_with_zero_convolutions_is_relu_of_identity():
    block = ResidualBlock(16)
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
    x = torch.randn(2, 16, 12, 12)
    assert torch.equal(block(x), torch.relu(x))


def test_blocks_reject_bad_channels():
    with pytest.raises(ValueError):
        Inception(0)
    with pytest.raises(ValueError):
        ResidualBlock(0)


def test_bn_basic_block_starts_as_its_shortcut_and_downsamples_with_a_projection():
    from cnnlab.models.bn_nets import BasicBlockBN

    same = BasicBlockBN(16, 16).eval()
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(same(x), torch.relu(x))  # the last BN's weight starts at 0: the block is relu(identity)
    down = BasicBlockBN(16, 32, stride=2)
    assert down(x).shape == (2, 32, 4, 4)
    assert isinstance(down.shortcut[0], torch.nn.Conv2d) and down.shortcut[0].stride == (2, 2)
    with pytest.raises(ValueError):
        BasicBlockBN(16, 16, stride=3)


def test_bn_inception_block_concatenates_its_four_branches():
    from cnnlab.models.bn_nets import InceptionBN

    block = InceptionBN(32, 16, (16, 24), (8, 12), 12).eval()
    x = torch.randn(2, 32, 14, 14)
    out = block(x)
    assert out.shape == (2, 64, 14, 14) == (2, block.out_channels, 14, 14)
    assert torch.equal(out, torch.cat(block.branches(x), 1))
    assert [b.shape[1] for b in block.branches(x)] == [16, 24, 12, 12]


def test_the_registry_holds_each_models_facts_and_the_recipes_read_them():
    from cnnlab.config import make_config
    from cnnlab.models import get_model, lecture_models, list_models

    assert lecture_models() == ["basic_cnn", "inception_net", "resnet"]
    for name in list_models():
        spec = get_model(name)
        assert spec.name == name and spec.default_epochs >= 1 and spec.summary
        assert make_config(name).epochs == spec.default_epochs
        assert make_config(name, "course").epochs == 10  # the course's loop is the same for every network
    with pytest.raises(ValueError, match="unknown model 'lenet'"):
        get_model("lenet")


def test_the_models_with_branches_are_read_off_the_registry():
    branched = models_with_branches()
    assert {"inception_net", "inception_bn"} <= set(branched)
    assert not {"basic_cnn", "resnet", "resnet_bn"} & set(branched)


def block_inputs(name: str) -> list[tuple[str, torch.nn.Module, torch.Tensor]]:
    """(name, block, the input it gets) for every branched block of a fresh `name` in eval mode, the inputs
    caught by hooks during one forward pass, so each block is tried at the shape the network feeds it."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    seen = []
    hooks = [b.register_forward_pre_hook(lambda m, args, n=n: seen.append((n, m, args[0]))) for n, b in branched_blocks(model).items()]
    with torch.no_grad():
        model(torch.randn(2, 1, 28, 28))
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("name", models_with_branches())
def test_every_branched_block_describes_its_branches_and_forward_only_concatenates(name):
    blocks = block_inputs(name)
    assert blocks
    for block_name, block, x in blocks:
        with torch.no_grad():
            outs = block.branches(x)
            assert torch.equal(block(x), torch.cat(outs, 1)), block_name
        assert [o.shape[1] for o in outs] == list(block.branch_channels), block_name
        assert sum(block.branch_channels) == block.out_channels
        assert list(block.branch_modules) == list(block.branch_names)
        owned = [p for b in block.branch_names for p in block.branch_parameters(b)]
        assert len(owned) == len(list(block.parameters())) and {id(p) for p in owned} == {id(p) for p in block.parameters()}


def test_a_branch_description_that_does_not_fit_the_block_is_an_error():
    from cnnlab.models.blocks import BranchedBlock

    class TwoBranches(BranchedBlock):
        def __init__(self, branches):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(3, 5, 1)
            self.describe_branches(branches)

    TwoBranches({"a": (4, ("a",)), "b": (5, ("b",))})
    with pytest.raises(ValueError, match="exactly one branch"):
        TwoBranches({"a": (4, ("a",))})  # b's parameters belong to no branch
    with pytest.raises(ValueError, match="exactly one branch"):
        TwoBranches({"a": (4, ("a",)), "b": (5, ("b", "a"))})  # a's counted twice
    with pytest.raises(ValueError, match="names no module c"):
        TwoBranches({"a": (4, ("a",)), "b": (5, ("b", "c"))})
    with pytest.raises(ValueError, match=">= 1 channel"):
        TwoBranches({"a": (0, ("a",)), "b": (5, ("b",))})
